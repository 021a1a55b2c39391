"""Organ segmentation of CT series from configured 3-D boxes, for ``medvl infer`` / ``listen``.

A CT study arrives as one file per slice. The study's CT instances are grouped by series and
stacked into a volume in HU (:func:`medvl.io.series.assemble_series`, slices ordered along the
normal), windowed to [0, 1] as the SAM was trained (``CtSegConfig.window``), and each configured
structure is segmented from its 3-D box with :meth:`SamSegmenter.predict_volume`:

- ``mode: box3d``: every slice of the box's z range is prompted with the box's 2-D extent;
- ``mode: propagate``: the box's middle slice is prompted with it, and each neighbour with the
  previous slice's mask box plus ``margin_px``, within the box's z range, until ``stop``
  (:class:`~medvl.models.sam.predict.PropagationStop`) finds a mask implausible as the next
  cross-section. Off by default: the box's z range already bounds the walk, and on the demo's
  SAM the rules cut more than they saved (data_cards/ct_example.md); a generous box wants
  :data:`~medvl.models.sam.predict.UNBOUNDED_WALK_STOP`'s rules.

A box is ``[x0, y0, z0, x1, y1, z1]`` (two opposite corners), either in voxel indices of the
stacked series (``units: voxel``; x = column, y = row, z = slice along the normal, inclusive) or
in patient LPS millimetres (``units: mm``; the corners are mapped through the series' affine).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from medvl.infer.volume_result import SeriesSegmentation, VolumeSegment
from medvl.io.dicom import DicomImage, DicomReadError, read_dicom
from medvl.io.series import SeriesInfo, Volume, assemble_series
from medvl.io.windows import apply_window, resolve_window
from medvl.models.sam.predict import PropagationStop, SamSegmenter

logger = logging.getLogger(__name__)

Box3d = tuple[float, float, float, float, float, float]


@dataclass
class CtSegConfig:
    """Which CT structures to segment, where, and how the series is windowed for the SAM."""

    structures: dict[str, Box3d] = field(default_factory=dict)  # name -> [x0,y0,z0,x1,y1,z1]
    units: Literal["voxel", "mm"] = "voxel"
    mode: Literal["box3d", "propagate"] = "propagate"
    window: tuple[float, float] | str = (40.0, 400.0)  # HU (center, width) or a preset name
    margin_px: float = 5.0  # propagate: growth of each slice's mask box for the next slice
    stop: PropagationStop = field(default_factory=PropagationStop)  # propagate: off by default
    modalities: tuple[str, ...] = ("CT",)

    def __post_init__(self) -> None:
        if self.units not in ("voxel", "mm"):
            raise ValueError(f"ct.units must be voxel or mm, got {self.units!r}")
        if self.mode not in ("box3d", "propagate"):
            raise ValueError(f"ct.mode must be box3d or propagate, got {self.mode!r}")
        if isinstance(self.window, list):
            self.window = tuple(self.window)
        resolve_window(self.window)
        for name, box in self.structures.items():
            if len(box) != 6:
                raise ValueError(f"ct.structures.{name}: give 6 numbers [x0, y0, z0, x1, y1, z1]")
            self.structures[name] = tuple(float(v) for v in box)


def split_volume_series(
    paths: list[Path], modalities: tuple[str, ...]
) -> tuple[dict[str, SeriesInfo], list[Path]]:
    """Group single-frame instances of ``modalities`` by series; return them and the rest."""
    series: dict[str, SeriesInfo] = {}
    rest: list[Path] = []
    for path in paths:
        try:
            header: DicomImage = read_dicom(path, decode=False)
        except DicomReadError:
            rest.append(path)  # the radiograph selection records why
            continue
        if header.modality not in modalities or header.frames != 1:
            rest.append(path)
            continue
        info = series.setdefault(
            header.series_uid_hash, SeriesInfo(header.series_uid_hash, header.modality)
        )
        info.paths.append(str(path))
        info.images.append(header)
    return series, rest


def voxel_box(box: Box3d, units: str, volume: Volume) -> tuple[np.ndarray, tuple[int, int]] | None:
    """A configured box as (xyxy on the slices, (z0, z1)) in voxel indices, clipped to the grid.

    ``None`` when the box does not overlap the volume (the organ lies outside this scan).
    """
    corners = np.array([box[:3], box[3:]], dtype=np.float64)  # (x, y, z) each
    if units == "mm":
        inverse = np.linalg.inv(volume.affine)  # LPS mm -> (z, y, x) indices
        zyx = (inverse @ np.c_[corners, np.ones(2)].T)[:3].T
        corners = zyx[:, ::-1]
    low, high = corners.min(axis=0), corners.max(axis=0)
    depth, height, width = volume.array.shape
    top = np.array([width - 1, height - 1, depth - 1], dtype=np.float64)
    if np.any(high < 0) or np.any(low > top):
        return None
    low, high = np.clip(low, 0, top), np.clip(high, 0, top)
    xyxy = np.array([low[0], low[1], high[0], high[1]])
    return xyxy, (int(np.floor(low[2] + 1e-6)), int(np.ceil(high[2] - 1e-6)))  # mm round-off


def segment_series(
    segmenter: SamSegmenter, info: SeriesInfo, config: CtSegConfig
) -> SeriesSegmentation:
    """Stack ``info`` into a volume and segment every configured structure on it."""
    volume = assemble_series(info, f"series {info.series_uid_hash}")
    center, width, _ = resolve_window(config.window)
    pixels = apply_window(volume.array, center, width)
    voxel_mm3 = float(np.prod(volume.spacing))
    result = SeriesSegmentation(
        series_uid_hash=volume.series_uid_hash,
        study_uid_hash=info.images[0].study_uid_hash,
        modality=volume.modality,
        spacing=volume.spacing,
        source_paths=tuple(Path(p) for p in volume.paths),
    )
    for name, box in config.structures.items():
        placed = voxel_box(box, config.units, volume)
        if placed is None:
            logger.info("series %s: %s's box is outside the scan", volume.series_uid_hash, name)
            result.not_in_view.append(name)
            continue
        xyxy, (z0, z1) = placed
        prediction = segmenter.predict_volume(
            pixels, xyxy, z_range=(z0, z1), mode=config.mode, margin_px=config.margin_px,
            stop=config.stop,
        )  # fmt: skip
        held = [prediction.scores[z] for z in range(z0, z1 + 1) if prediction.mask[z].any()]
        score = float(np.mean(held)) if held else 0.0
        result.segments.append(VolumeSegment(name, prediction.mask, voxel_mm3, score, (z0, z1)))
        logger.info("series %s: %s on %d slices", volume.series_uid_hash, name, len(held))
    return result
