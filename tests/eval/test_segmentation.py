"""Dice, HD95 and NSD in millimetres (MONAI), empty-ground-truth reporting, overlay PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from medvl.eval.overlays import GT_COLOR, PRED_COLOR, overlay_panels, save_overlay
from medvl.eval.segmentation import case_metrics, summarize_cases

pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def _square(shape=(80, 100), top=20, left=30, side=30) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_perfect_prediction() -> None:
    gt = _square()
    m = case_metrics(gt, gt, (0.7, 0.7))
    assert m.dice == 1.0 and m.hd95 == 0.0 and m.nsd == 1.0 and m.units == "mm"


def test_distances_use_the_pixel_spacing() -> None:
    gt, pred = _square(), _square(top=22)  # shifted down by two rows
    fine = case_metrics(pred, gt, (0.5, 0.5), tolerance_mm=2.0)  # 1 mm shift
    coarse = case_metrics(pred, gt, (2.0, 2.0), tolerance_mm=2.0)  # 4 mm shift
    assert fine.dice == pytest.approx(coarse.dice) == pytest.approx(28 / 30)
    assert fine.hd95 == pytest.approx(1.0) and coarse.hd95 == pytest.approx(4.0)
    assert fine.nsd == 1.0 and coarse.nsd < 0.8
    anisotropic = case_metrics(pred, gt, (3.0, 0.1))  # the shift is along rows: 6 mm
    assert anisotropic.hd95 == pytest.approx(6.0)
    assert case_metrics(pred, gt, None).units == "px"


def test_crop_does_not_change_the_metrics() -> None:
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(0)
    gt = _square((120, 90), 40, 20, 35)
    pred = gt ^ (rng.random(gt.shape) < 0.02)
    pred[5:9, 70:80] = True  # a false positive far from the structure
    m = case_metrics(pred, gt, (0.6, 0.9))
    onehot = [
        torch.stack([torch.from_numpy(~x), torch.from_numpy(x)])[None].float() for x in (pred, gt)
    ]
    full_hd = compute_hausdorff_distance(*onehot, percentile=95, spacing=[0.6, 0.9])
    full_nsd = compute_surface_dice(*onehot, [2.0], spacing=[0.6, 0.9], use_subvoxels=True)
    assert m.hd95 == pytest.approx(float(full_hd)) and m.nsd == pytest.approx(float(full_nsd))


def test_nsd_uses_subvoxels_like_medsam() -> None:
    from monai.metrics import compute_surface_dice

    gt, pred = _square(), _square(top=21, side=31)
    onehot = [
        torch.stack([torch.from_numpy(~x), torch.from_numpy(x)])[None].float() for x in (pred, gt)
    ]
    boundary_pixels = float(compute_surface_dice(*onehot, [0.5], spacing=[1.0, 1.0]))
    ours = case_metrics(pred, gt, (1.0, 1.0), tolerance_mm=0.5).nsd
    subvoxel = float(compute_surface_dice(*onehot, [0.5], spacing=[1.0, 1.0], use_subvoxels=True))
    assert ours == pytest.approx(subvoxel) and ours != pytest.approx(boundary_pixels)


def test_volumes_and_empty_cases_are_reported_apart() -> None:
    gt3 = np.stack([_square()] * 4)
    pred3 = np.stack([_square(left=31)] * 4)
    vol = case_metrics(pred3, gt3, (3.0, 0.5, 0.5), structure="liver", image_id="ct1")
    assert 0.9 < vol.dice < 1 and vol.hd95 == pytest.approx(0.5)
    empty = np.zeros((80, 100), dtype=bool)
    cases = [
        vol,
        case_metrics(_square(), _square(), (1, 1), structure="liver"),
        case_metrics(empty, _square(), (1, 1), structure="liver"),  # missed
        case_metrics(empty, empty, (1, 1), structure="liver"),  # empty GT, nothing predicted
        case_metrics(_square(), empty, (1, 1), structure="liver"),  # empty GT, false positive
        case_metrics(_square(), _square(), (1, 1), structure="heart"),
    ]
    missed, quiet = cases[2], cases[3]
    assert missed.dice == 0.0 and math.isnan(missed.hd95) and missed.nsd == 0.0
    assert quiet.gt_empty and math.isnan(quiet.dice)
    summary = summarize_cases(cases)
    liver = summary["liver"]
    assert liver["n"] == 3 and liver["n_empty_gt"] == 2 and liver["missed"] == 1
    assert liver["dice_mean"] == pytest.approx((vol.dice + 1.0 + 0.0) / 3)
    assert liver["empty_gt_fp_rate"] == 0.5
    assert liver["hd95_mean"] == pytest.approx((0.5 + 0.0) / 2)  # defined cases only
    assert math.isnan(summary["heart"]["empty_gt_fp_rate"])
    assert summary["all"]["dice_mean"] == pytest.approx((liver["dice_mean"] + 1.0) / 2)
    with pytest.raises(ValueError, match="shape"):
        case_metrics(empty, gt3)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(empty, empty, (1.0, 1.0, 1.0))


def test_overlay_panels_and_png(tmp_path) -> None:
    image = np.linspace(0, 1, 60 * 40, dtype=np.float32).reshape(60, 40)
    gt, pred = _square((60, 40), 10, 5, 20), _square((60, 40), 30, 15, 20)
    strip = overlay_panels(image, gt, pred)
    assert strip.shape == (60, 120, 3)
    assert np.array_equal(strip[0, 0], strip[0, 40])  # the image panel is untouched gray
    assert tuple(strip[10, 40 + 5]) == GT_COLOR  # ground-truth outline in the middle panel
    assert tuple(strip[49, 80 + 34]) == PRED_COLOR  # prediction outline in the right panel
    assert tuple(strip[10, 80 + 5]) == GT_COLOR  # truth outline repeated on the prediction
    path = save_overlay(tmp_path / "o" / "case.png", image, gt, pred, max_side=30)
    with Image.open(path) as im:
        assert im.size == (60, 30)
    with pytest.raises(ValueError, match="shape"):
        overlay_panels(image, gt[:10], None)
