"""3-D evaluation of a SAM on a CT: a box on one slice, propagated, scored against the labels.

Per structure: the box is the label's tight box on the slice of its largest cross-section (the
prompt a reader would draw), :meth:`SamSegmenter.predict_volume` (``mode="propagate"``) walks
up and down from it, and the 3-D mask is scored with MONAI (:func:`case_metrics`: Dice, NSD at
2 mm with the series spacing). Volumes are voxel count x voxel volume, in mL.

A slice-wise fine-tuned decoder has seen some of these slices: ``held_out`` names the slices
no training step saw (the val/test slabs), and :class:`VolumeMetrics` also reports the Dice on
those slices alone, so the number that is not optimistic is beside the one that is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medvl.eval.segmentation import case_metrics
from medvl.models.sam.geometry import mask_box
from medvl.models.sam.predict import UNBOUNDED_WALK_STOP, PropagationStop, SamSegmenter


@dataclass
class VolumeMetrics:
    """One structure's 3-D result against its label."""

    structure: str
    start_slice: int  # the largest cross-section, where the box was given
    label_slices: int  # slices holding the label
    dice: float  # 3-D Dice over the whole volume
    nsd: float  # normalised surface Dice at the tolerance, in 3-D
    dice_held_out: float  # Dice over the held-out slices only (NaN when none hold the label)
    label_ml: float
    predicted_ml: float

    @property
    def volume_error(self) -> float:
        """(predicted - label) / label volume."""
        return (self.predicted_ml - self.label_ml) / self.label_ml


def largest_cross_section(mask: np.ndarray) -> int:
    """Index of the slice where the (Z, H, W) ``mask`` covers the most pixels."""
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """MONAI's Dice of two boolean masks of any shape (NaN when the label is empty)."""
    import torch
    from monai.metrics import compute_dice

    def onehot(mask: np.ndarray) -> torch.Tensor:
        m = torch.as_tensor(np.asarray(mask, dtype=bool).reshape(1, -1))
        return torch.stack([~m, m])[None].float()

    return float(compute_dice(onehot(pred), onehot(gt), include_background=False)[0, 0])


def evaluate_volume(
    segmenter: SamSegmenter,
    pixels: np.ndarray,
    label_map: np.ndarray,
    names: Sequence[str],
    spacing: tuple[float, float, float],
    held_out: Sequence[int] = (),
    margin_px: float = 5.0,
    stop: PropagationStop | None = None,
) -> list[VolumeMetrics]:
    """Propagate a box from each structure's largest cross-section and score the 3-D mask.

    ``pixels`` is the (Z, H, W) volume windowed to [0, 1] as the SAM was trained; value ``n`` of
    ``label_map`` is ``names[n - 1]``; ``spacing`` is (slice step, row, column) in mm; ``stop``
    ends the walks, which nothing else bounds (default: the rules measured on the CT example,
    :data:`~medvl.models.sam.predict.UNBOUNDED_WALK_STOP`).
    """
    stop = stop or PropagationStop(**UNBOUNDED_WALK_STOP)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    keep = np.zeros(label_map.shape[0], dtype=bool)
    keep[list(held_out)] = True
    out = []
    for number, name in enumerate(names, start=1):
        gt = label_map == number
        if not gt.any():
            continue
        start = largest_cross_section(gt)
        prediction = segmenter.predict_volume(
            pixels, mask_box(gt[start]), mode="propagate", start_slice=start,
            margin_px=margin_px, stop=stop,
        )  # fmt: skip
        metrics = case_metrics(prediction.mask, gt, spacing, structure=name)
        held = dice(prediction.mask[keep], gt[keep]) if gt[keep].any() else math.nan
        out.append(
            VolumeMetrics(
                structure=name,
                start_slice=start,
                label_slices=int(gt.any(axis=(1, 2)).sum()),
                dice=metrics.dice,
                nsd=metrics.nsd,
                dice_held_out=held,
                label_ml=int(gt.sum()) * voxel_ml,
                predicted_ml=int(prediction.mask.sum()) * voxel_ml,
            )
        )
    return out
