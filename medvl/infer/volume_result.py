"""The result of segmenting one CT (or MR) series: 3-D masks and their volumes in millilitres.

The masks stay in memory for the SEG writer; the JSON holds voxel counts and volumes, keyed by
the series' UID hash. A volume is voxel count x voxel volume, the voxel volume coming from the
series geometry (row spacing x column spacing x slice step, as assembled by
:func:`medvl.io.series.read_series`): the slice step, not SliceThickness, because slices may
overlap or leave gaps, and only the step tiles space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class VolumeSegment:
    """One structure's (Z, H, W) mask on a series, in the series' slice order."""

    structure: str
    mask: np.ndarray  # bool (Z, H, W), slice z = source instance z of the series
    voxel_mm3: float  # row spacing x column spacing x slice step
    score: float  # mean SAM IoU prediction over the slices holding the structure
    prompt_slices: tuple[int, int]  # first and last slice the prompt covered (inclusive)

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    @property
    def volume_ml(self) -> float:
        """Voxel count x voxel volume, in mL (1 mL = 1000 mm^3)."""
        return self.voxels * self.voxel_mm3 / 1000.0

    @property
    def slices(self) -> list[int]:
        """Indices of the slices where the mask is not empty."""
        return [int(z) for z in np.flatnonzero(self.mask.any(axis=(1, 2)))]


@dataclass
class SeriesSegmentation:
    """Every configured structure on one series, with the series' geometry and source files."""

    series_uid_hash: str
    study_uid_hash: str
    modality: str
    spacing: tuple[float, float, float]  # (slice step, row spacing, column spacing) in mm
    source_paths: tuple[Path, ...]  # one per slice, in slice order (memory only, never JSON)
    segments: list[VolumeSegment] = field(default_factory=list)
    not_in_view: list[str] = field(default_factory=list)  # structures whose box misses the scan

    @property
    def slices(self) -> int:
        return len(self.source_paths)
