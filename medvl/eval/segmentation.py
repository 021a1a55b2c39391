"""Segmentation metrics in millimetres: Dice, HD95 and normalised surface Dice (MONAI).

Per case (one image or volume, one structure) :func:`case_metrics` computes with MONAI:

- Dice (``compute_dice``);
- HD95, the 95th percentile of the symmetric surface distance in mm
  (``compute_hausdorff_distance(percentile=95, spacing=...)``);
- NSD at ``tolerance_mm`` (2 mm, MedSAM's choice): ``compute_surface_dice`` with
  ``use_subvoxels=True``, the surface-element formulation of Nikolov et al. that MedSAM's own
  ``SurfaceDice`` implements; MONAI's default (``use_subvoxels=False``) counts boundary pixels
  and gives different numbers.

Spacing is the image's (row, col) or (z, row, col) in mm; without one, distances are in pixels
and the case says ``units="px"``.

Empty ground truth is reported apart (:func:`summarize_cases`): Dice of an empty prediction on
an empty slice is 1 by convention, and averaging those in inflates the mean. For such cases we
report how often anything was predicted (``empty_gt_fp_rate``); Dice/HD95/NSD means are over
non-empty ground truth only. A missed structure (empty prediction, non-empty truth) has Dice 0,
NSD 0 and no HD95 (infinite); it counts in ``missed``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

DEFAULT_TOLERANCE_MM = 2.0


@dataclass
class CaseMetrics:
    """Metrics of one (image, structure); NaN where undefined (see module docstring)."""

    structure: str
    image_id: str
    dice: float
    hd95: float
    nsd: float
    gt_empty: bool
    pred_empty: bool
    gt_pixels: int
    pred_pixels: int
    units: str = "mm"


def _onehot(mask: np.ndarray) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask, dtype=bool))
    return torch.stack([~m, m])[None].float()  # (1, 2, *spatial)


def _union_crop(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of both masks plus one pixel of background on every side.

    Surface distances depend only on the two surfaces, which the crop contains whole, so the
    metrics are exact; the distance transforms just run on fewer pixels.
    """
    union = a | b
    crop = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hits = np.flatnonzero(np.any(union, axis=other))
        crop.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return tuple(crop)


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    structure: str = "",
    image_id: str = "",
) -> CaseMetrics:
    """Dice, HD95 and NSD of one binary prediction against its ground truth (2-D or 3-D).

    The masks are cropped to their joint bounding box first (exact, see :func:`_union_crop`),
    which keeps full-resolution radiographs cheap.
    """
    from monai.metrics import compute_dice

    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    if spacing is not None and len(spacing) != gt.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {gt.ndim}-D mask")
    units = "mm" if spacing is not None else "px"
    sp = [float(s) for s in spacing] if spacing is not None else [1.0] * gt.ndim
    n_gt, n_pred = int(gt.sum()), int(pred.sum())
    base = {"structure": structure, "image_id": image_id, "gt_pixels": n_gt, "pred_pixels": n_pred}
    base.update(gt_empty=n_gt == 0, pred_empty=n_pred == 0, units=units)
    if n_gt == 0:
        return CaseMetrics(dice=math.nan, hd95=math.nan, nsd=math.nan, **base)
    if n_pred == 0:
        return CaseMetrics(dice=0.0, hd95=math.nan, nsd=0.0, **base)
    crop = _union_crop(pred, gt)
    y_pred, y = _onehot(pred[crop]), _onehot(gt[crop])
    dice = float(compute_dice(y_pred, y, include_background=False)[0, 0])
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        hd95, nsd = _distances(y_pred, y, sp, tolerance_mm)
    return CaseMetrics(dice=dice, hd95=hd95, nsd=nsd, **base)


def _distances(
    y_pred: torch.Tensor, y: torch.Tensor, spacing: list[float], tolerance_mm: float
) -> tuple[float, float]:
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    hd95 = float(
        compute_hausdorff_distance(
            y_pred, y, include_background=False, percentile=95, spacing=spacing
        )[0, 0]
    )
    nsd = float(
        compute_surface_dice(
            y_pred,
            y,
            [float(tolerance_mm)],
            include_background=False,
            spacing=spacing,
            use_subvoxels=True,
        )[0, 0]
    )
    return hd95, nsd


def _stats(values: Iterable[float], prefix: str) -> dict[str, float]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return {f"{prefix}_mean": math.nan, f"{prefix}_median": math.nan}
    return {f"{prefix}_mean": float(v.mean()), f"{prefix}_median": float(np.median(v))}


def summarize_cases(cases: Sequence[CaseMetrics]) -> dict[str, dict[str, float]]:
    """Per structure (and ``"all"``, the mean of the structure means): counts and statistics.

    Keys per structure: ``n``, ``n_empty_gt``, ``missed``, ``dice_mean/median``,
    ``hd95_mean/median`` (over cases where it is defined), ``nsd_mean/median`` and
    ``empty_gt_fp_rate`` (NaN when there was no empty-GT case).
    """
    by_structure: dict[str, list[CaseMetrics]] = {}
    for case in cases:
        by_structure.setdefault(case.structure, []).append(case)
    out: dict[str, dict[str, float]] = {}
    for name, group in sorted(by_structure.items()):
        present = [c for c in group if not c.gt_empty]
        empty = [c for c in group if c.gt_empty]
        row: dict[str, float] = {"n": float(len(present)), "n_empty_gt": float(len(empty))}
        row["missed"] = float(sum(c.pred_empty for c in present))
        row.update(_stats((c.dice for c in present), "dice"))
        row.update(_stats((c.hd95 for c in present), "hd95"))
        row.update(_stats((c.nsd for c in present), "nsd"))
        fp = [not c.pred_empty for c in empty]
        row["empty_gt_fp_rate"] = float(np.mean(fp)) if fp else math.nan
        out[name] = row
    if out:
        keys = ("dice_mean", "hd95_mean", "nsd_mean")
        out["all"] = {
            k: float(np.nanmean([r[k] for r in out.values()]))
            if any(not math.isnan(r[k]) for r in out.values())
            else math.nan
            for k in keys
        }
        out["all"]["n"] = float(sum(r["n"] for k, r in out.items() if k != "all"))
    return out


def cases_to_rows(cases: Sequence[CaseMetrics]) -> list[dict[str, object]]:
    """Plain dicts (for JSONL / CSV) of per-case metrics."""
    return [asdict(c) for c in cases]
