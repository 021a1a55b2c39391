"""Prompt simulation: box jitter modes, positive/negative points, 3-D boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvl.models.sam.prompts import (
    PromptConfig,
    box3d_from_mask,
    jitter_boxes,
    sample_points,
    simulate_prompts,
)

SIZES = torch.tensor([[1024, 1024]] * 64)


def _boxes(n: int = 64) -> torch.Tensor:
    return torch.tensor([[300.0, 200.0, 600.0, 700.0]]).repeat(n, 1)


def test_medsam_jitter_only_grows_by_integers_up_to_the_limit() -> None:
    gen = torch.Generator().manual_seed(0)
    out = jitter_boxes(_boxes(), SIZES, "medsam", 20, img_size=1024, generator=gen)
    delta = (out - _boxes()) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    assert (delta >= 0).all() and (delta <= 20).all()
    assert torch.equal(delta, delta.round()) and delta.unique().numel() > 10
    small = jitter_boxes(_boxes(), SIZES, "medsam", 20, img_size=64, generator=gen)
    assert ((small - _boxes()).abs() <= 1).all()  # 20 px at 1024 is 1.25 px at 64


def test_sam_med2d_jitter_translates_the_box() -> None:
    gen = torch.Generator().manual_seed(1)
    out = jitter_boxes(_boxes(), SIZES, "sam_med2d", 5, generator=gen)
    shift = out - _boxes()
    assert torch.equal(shift[:, :2], shift[:, 2:]) and shift.abs().max() <= 5
    tiny = torch.tensor([[100.0, 100.0, 104.0, 160.0]]).repeat(64, 1)
    shift = jitter_boxes(tiny, SIZES, "sam_med2d", 5, generator=gen) - tiny
    assert shift.abs().max() <= 2  # at most half the shorter side


def test_sam_jitter_is_gaussian_and_clipped() -> None:
    gen = torch.Generator().manual_seed(2)
    out = jitter_boxes(_boxes(4096), SIZES.repeat(64, 1), "sam", 20, ratio=0.1, generator=gen)
    delta = out - _boxes(4096)
    assert delta.abs().max() <= 20 + 1e-4
    assert (delta.abs() > 19.9).float().mean() > 0.1  # sides of 300-500 px: std 30-50, clipped


def test_jitter_stays_inside_each_image() -> None:
    boxes = torch.tensor([[0.0, 0.0, 99.0, 149.0]]).repeat(64, 1)
    sizes = torch.tensor([[150, 100]] * 64)
    out = jitter_boxes(boxes, sizes, "medsam", 200, generator=torch.Generator().manual_seed(3))
    assert (out[:, 0] >= 0).all() and (out[:, 2] <= 99).all() and (out[:, 3] <= 149).all()
    assert (out[:, 0] <= out[:, 2]).all() and (out[:, 1] <= out[:, 3]).all()
    with pytest.raises(ValueError):
        jitter_boxes(boxes, sizes, "wild")  # type: ignore[arg-type]


def test_points_fall_inside_and_outside_the_mask() -> None:
    targets = torch.zeros(3, 16, 16)
    targets[0, 4:10, 4:10] = 1.0
    targets[1, :, :] = 1.0  # no negative candidate
    boxes = torch.tensor([[8.0, 8.0, 48.0, 48.0]] * 3)  # model frame of a 64 px input
    gen = torch.Generator().manual_seed(0)
    points, labels = sample_points(targets, boxes, 4, 3, img_size=64, generator=gen)
    assert points.shape == (3, 7, 2) and labels.shape == (3, 7)
    cells = (points / 4).floor().long()
    inside = targets[0][cells[0, :, 1], cells[0, :, 0]]
    assert torch.all(inside[:4] == 1) and torch.all(inside[4:] == 0)
    assert torch.all(points[0, 4:] >= 8) and torch.all(points[0, 4:] <= 48)  # in the box
    assert labels[0].tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert labels[1, 4:].tolist() == [-1, -1, -1]  # padding points where none exist
    assert labels[2, :4].tolist() == [-1, -1, -1, -1]  # empty target: no positive


def test_simulate_prompts_eval_is_deterministic_tight_box() -> None:
    config = PromptConfig(positive_points=1, negative_points=1)
    targets = torch.zeros(2, 16, 16)
    targets[:, 2:8, 3:9] = 1
    boxes = torch.tensor([[12.0, 8.0, 35.0, 31.0]] * 2)
    sizes = torch.tensor([[64, 64]] * 2)
    a = simulate_prompts(config, boxes, targets, sizes, 64, torch.Generator().manual_seed(5), False)
    b = simulate_prompts(config, boxes, targets, sizes, 64, torch.Generator().manual_seed(5), False)
    assert torch.equal(a["boxes"], boxes) and torch.equal(a["points"], b["points"])
    with pytest.raises(ValueError, match="box or at least one point"):
        PromptConfig(box=False)


def test_box3d_from_mask() -> None:
    mask = np.zeros((6, 20, 30), dtype=bool)
    assert box3d_from_mask(mask) is None
    mask[2, 5:8, 10:12] = True
    mask[4, 3:6, 14:20] = True
    z0, z1, box = box3d_from_mask(mask)
    assert (z0, z1) == (2, 4)
    np.testing.assert_array_equal(box, [10, 3, 19, 7])
