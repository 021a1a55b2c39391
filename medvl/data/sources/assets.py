"""Locate the real data files that torchxrayvision ships, without importing torchxrayvision.

The package's ``data/`` folder holds real, openly licensed files medvl builds its offline
default dataset from (Indiana University reports and DICOM headers, V7 Labs lung masks, SIIM
pneumothorax RLE masks, RSNA labels). Importing torchxrayvision itself pulls in torch, torchvision
and skimage and takes seconds, so the folder is found from the import system's metadata only:
``importlib.util.find_spec`` (which locates a top-level package without running it) and, as a
fallback, the installed distribution's file list.

Search order for a file: an explicit path given by the caller; ``$MEDVL_ASSET_DIR``; the
installed torchxrayvision ``data/`` folder.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

ASSET_DIR_ENV = "MEDVL_ASSET_DIR"
PACKAGE = "torchxrayvision"

IU_REPORTS = "NLMCXR_reports.tgz"
IU_DICOM_METADATA = "nlmcxr_dicom_metadata.csv.gz"
IU_TSNE_VIEWS = "nlmcxr_tsne_pa.csv.gz"
V7_LUNG_MASKS = "semantic_masks_v7labs_lungs.zip"
SIIM_RLE = "siim-pneumothorax-train-rle.csv.gz"
RSNA_LABELS = "kaggle_stage_2_train_labels.csv.zip"
RSNA_DICOM_HEADERS = "kaggle_stage_2_train_images_dicom_headers.csv.gz"
CHEXPERT_TRAIN_CSV = "chexpert_train.csv.gz"
NIH_BBOXES = "BBox_List_2017.csv.gz"


class AssetNotFoundError(FileNotFoundError):
    """A shipped data file could not be found; the message says where medvl looked."""


def _package_dir_from_spec() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _package_dir_from_metadata() -> Path | None:
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.parts[:1] == (PACKAGE,) and entry.name == "__init__.py":
            return Path(str(dist.locate_file(entry))).parent
    return None


def package_data_dir() -> Path | None:
    """The installed torchxrayvision ``data/`` folder, or None when the package is absent."""
    for finder in (_package_dir_from_spec, _package_dir_from_metadata):
        try:
            found = finder()
        except (ImportError, ValueError):
            found = None
        if found is not None and (found / "data").is_dir():
            return found / "data"
    return None


def asset_path(name: str, override: str | Path | None = None) -> Path:
    """Path of one shipped data file (``name`` is one of this module's constants).

    Parameters
    ----------
    name
        File name inside the data folder, e.g. :data:`IU_REPORTS`.
    override
        A file the user holds (e.g. the original Open-i archive); used as given when set.

    Raises
    ------
    AssetNotFoundError
        If the override does not exist, or no search location holds ``name``.
    """
    if override is not None:
        path = Path(override).expanduser()
        if not path.exists():
            raise AssetNotFoundError(f"{path}: file not found (given for {name})")
        return path
    looked: list[str] = []
    env_dir = os.environ.get(ASSET_DIR_ENV)
    if env_dir:
        candidate = Path(env_dir).expanduser() / name
        if candidate.is_file():
            return candidate
        looked.append(str(candidate))
    data_dir = package_data_dir()
    if data_dir is not None:
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
        looked.append(str(candidate))
    else:
        looked.append(f"the {PACKAGE} package (not installed)")
    raise AssetNotFoundError(
        f"{name}: not found; looked in {', '.join(looked)}. Install {PACKAGE} "
        f"(pip install {PACKAGE}), set ${ASSET_DIR_ENV}, or pass the file's path."
    )
