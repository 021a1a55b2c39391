"""Dataset sources: one module per public dataset layout, all returning the same records.

* ``iu`` -- :func:`read_iu` (over :func:`iu.xray.load_iu`): the real IU reports shipped with
  torchxrayvision; Studies with sections, MeSH terms, CheXpert-14 labels and view positions.
* ``mimic_cxr`` -- :func:`mimic_cxr.load_mimic`: Studies with reports and labeler labels.
* ``chexpert`` -- :func:`chexpert.load_chexpert`: Studies with labels (no report text).
* ``rsna_pneumonia`` -- :func:`rsna_pneumonia.load_rsna`: Studies + box-mask SegSamples.
* ``siim_pneumothorax`` -- :func:`siim_pneumothorax.load_siim`: Studies + RLE-mask SegSamples.
* ``csv`` -- :func:`csv_source.load_csv`: Studies (+ SegSamples) from a generic CSV.
* ``mask_folder`` -- :func:`mask_folder.load_mask_folder`: SegSamples from an image/mask folder
  (DICOM, NIfTI or PNG images; NIfTI or PNG masks; volumes as slices).
* ``phantom`` -- synthetic radiographs paired with the IU reports (its own modules).

Every adapter records unreadable files and malformed rows as failures and carries on. Report
text is scrubbed of identifiers by default (``scrub_reports``; set it to false for a corpus
that is already de-identified, such as MIMIC-CXR or IU). Each has
a config dataclass here, so the CLI (``medvl data adapter NAME ROOT --out DIR``) and YAML files
drive them the same way; :func:`run_adapter` is that shared entry point. Importing this package
is cheap: adapter modules load only when used.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from medvl.data.sources.common import SourceResult


@dataclass
class IUConfig:
    """Options of the Indiana University reports source (see :func:`iu.xray.load_iu`)."""

    reports: str | None = None
    metadata: str | None = None
    tsne: str | None = None
    image_root: str | None = None
    label_source: Literal["mesh", "labeler"] = "mesh"
    view_source: Literal["tsne+header", "header", "tsne"] = "tsne+header"
    closed_world: bool = True
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    scrub_reports: bool = True  # false: trust NLM's de-identification of the Open-i reports


@dataclass
class MimicConfig:
    """Options of the MIMIC-CXR adapter."""

    label_file: Literal["chexpert", "negbio"] = "chexpert"
    seed: int = 0
    scrub_reports: bool = True  # false: trust MIMIC-CXR's own de-identification


@dataclass
class CheXpertConfig:
    """Options of the CheXpert adapter."""

    check_files: bool = True
    val_fraction: float = 0.1
    train_csv: str | None = None
    seed: int = 0


@dataclass
class RsnaConfig:
    """Options of the RSNA Pneumonia adapter."""

    labels_csv: str | None = None
    include_negatives: bool = True
    seed: int = 0


@dataclass
class SiimConfig:
    """Options of the SIIM-ACR Pneumothorax adapter."""

    rle_csv: str | None = None
    include_empty: bool = True
    seed: int = 0


@dataclass
class CsvConfig:
    """Options of the generic CSV adapter (ROOT is the CSV file)."""

    root: str | None = None
    image_col: str = "image"
    report_col: str | None = "report"
    study_col: str | None = None
    patient_col: str | None = None
    view_col: str | None = None
    mask_col: str | None = None
    structure: str = "lesion"
    source: str = "csv"
    seed: int = 0
    scrub_reports: bool = True  # false only for a corpus that is already de-identified


@dataclass
class MaskFolderConfig:
    """Options of the generic image/mask folder adapter (see :mod:`.mask_folder`)."""

    structure: str = "foreground"
    labels: dict[int, str] | None = None
    window: tuple[float, float] | str | None = None
    include_empty: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Adapter:
    """How to run one adapter: module, function, its config class, whether it writes masks."""

    module: str
    function: str
    config: type
    writes_masks: bool = False


ADAPTERS: dict[str, Adapter] = {
    "mimic_cxr": Adapter("mimic_cxr", "load_mimic", MimicConfig),
    "chexpert": Adapter("chexpert", "load_chexpert", CheXpertConfig),
    "rsna_pneumonia": Adapter("rsna_pneumonia", "load_rsna", RsnaConfig, writes_masks=True),
    "siim_pneumothorax": Adapter("siim_pneumothorax", "load_siim", SiimConfig, writes_masks=True),
    "csv": Adapter("csv_source", "load_csv", CsvConfig),
    "mask_folder": Adapter("mask_folder", "load_mask_folder", MaskFolderConfig, writes_masks=True),
}


def run_adapter(
    name: str, root: str | Path, out_dir: str | Path, config: Any = None
) -> SourceResult:
    """Run adapter ``name`` on ``root``; masks (if any) go under ``out_dir/masks``.

    The manifests are not written here: call ``result.write(out_dir)`` (the CLI does).

    Raises
    ------
    ValueError
        If ``name`` is not a known adapter or ``config`` is not its config class.
    """
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; choose one of {sorted(ADAPTERS)}")
    adapter = ADAPTERS[name]
    config = adapter.config() if config is None else config
    if not isinstance(config, adapter.config):
        raise ValueError(f"adapter {name!r} takes a {adapter.config.__name__}")
    function = getattr(importlib.import_module(f"{__name__}.{adapter.module}"), adapter.function)
    kwargs = dataclasses.asdict(config)
    return function(root, out_dir, **kwargs) if adapter.writes_masks else function(root, **kwargs)


def read_iu(config: IUConfig | None = None) -> SourceResult:
    """The IU collection read as ``config`` says (``medvl data iu``): Studies and failures.

    The shipped reports and header table unless ``config`` points at an Open-i archive; see
    :func:`medvl.data.sources.iu.xray.load_iu` for what each option changes.
    """
    from medvl.data.sources.common import scrub_studies
    from medvl.data.sources.iu.xray import load_iu

    config = config or IUConfig()
    result = load_iu(
        config.reports,
        config.metadata,
        label_source=config.label_source,
        view_source=config.view_source,
        closed_world=config.closed_world,
        tsne_csv=config.tsne,
        image_root=config.image_root,
        fractions=config.fractions,
        seed=config.seed,
    )
    if config.scrub_reports:
        scrub_studies(result.studies)
    return result
