"""Geometry between original images and SAM's padded square input: exact on non-square images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from medvl.models.sam import SamConfig, build_sam
from medvl.models.sam.geometry import SamGeometry, mask_box, preprocess_shape, resize_longest

SHAPES = [(300, 217), (217, 300), (1024, 768), (2500, 2048), (37, 61)]


@pytest.mark.parametrize("shape", SHAPES)
def test_boxes_round_trip_exactly(shape: tuple[int, int]) -> None:
    geo = SamGeometry.for_shape(*shape, 1024)
    boxes = np.array([[0.0, 0.0, shape[1] - 1, shape[0] - 1], [12.5, 3.0, 40.0, 33.25]])
    model = geo.boxes_to_model(boxes)
    np.testing.assert_allclose(geo.boxes_to_original(model), boxes, rtol=0, atol=1e-9)
    expected = ResizeLongestSide(1024).apply_boxes(boxes, shape)  # upstream's own mapping
    np.testing.assert_allclose(model, expected, rtol=0, atol=1e-9)
    points = boxes.reshape(-1, 2)
    np.testing.assert_allclose(
        geo.points_to_original(geo.points_to_model(points)), points, atol=1e-9
    )
    t = torch.tensor(boxes, dtype=torch.float64)
    assert torch.allclose(geo.boxes_to_model(t), torch.tensor(model))


@pytest.mark.parametrize("shape", SHAPES)
def test_preprocess_shape_is_upstreams(shape: tuple[int, int]) -> None:
    assert preprocess_shape(*shape, 1024) == ResizeLongestSide.get_preprocess_shape(*shape, 1024)
    gray, geo = resize_longest(np.random.default_rng(0).random(shape, dtype=np.float32), 256)
    h, w = geo.input_size
    assert gray.shape == (1, 256, 256) and max(h, w) == 256
    assert torch.all(gray[:, h:, :] == 0) and torch.all(gray[:, :, w:] == 0)
    assert gray[:, :h, :w].std() > 0


def test_mask_back_to_original_is_exact_with_integer_scale() -> None:
    geo = SamGeometry.for_shape(64, 32, 256)  # 4 model pixels per original pixel
    low = -torch.ones(1, 1, 64, 64)
    low[..., 10:30, 5:20] = 1.0
    mask = geo.logits_to_original(low)[0, 0] > 0
    expected = np.zeros((64, 32), dtype=bool)
    expected[10:30, 5:20] = True
    assert mask.shape == (64, 32)
    np.testing.assert_array_equal(mask.numpy(), expected)


@pytest.mark.parametrize("shape", [(300, 217), (217, 300), (37, 61)])
def test_padding_never_leaks_into_the_original_geometry(shape: tuple[int, int]) -> None:
    geo = SamGeometry.for_shape(*shape, 1024)
    valid = geo.valid_mask(256)
    inside = torch.where(valid > 0, 1.0, -1.0)[None, None]
    outside = torch.where(valid > 0, -1.0, 1.0)[None, None]
    assert (geo.logits_to_original(inside)[0, 0] > 0).all()
    assert not (geo.logits_to_original(outside)[0, 0] > 0).any()


def test_forward_then_back_recovers_a_mask_on_a_non_square_image() -> None:
    mask = np.zeros((300, 217), dtype=bool)
    yy, xx = np.mgrid[:300, :217]
    mask[((yy - 140) / 60) ** 2 + ((xx - 90) / 40) ** 2 <= 1] = True
    geo = SamGeometry.for_shape(300, 217, 1024)
    target = geo.mask_to_model(mask, 256)
    back = geo.logits_to_original((target - 0.5)[None, None])[0, 0].numpy() > 0
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.98
    np.testing.assert_array_equal(
        np.argwhere(back).mean(0).round(), np.argwhere(mask).mean(0).round()
    )
    full = geo.mask_to_model(np.ones((300, 217)), 256)
    assert full[:, 200:].max() == 0  # padding at the right: 217 * 1024 / 300 = 741 px wide


def test_logits_to_original_equals_upstream_postprocess() -> None:
    model = build_sam(SamConfig(variant="tiny", img_size=64))
    geo = SamGeometry.for_shape(90, 50, 64)
    low = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = geo.logits_to_original(low)
    upstream = model.postprocess_masks(low, geo.input_size, geo.original_size)
    torch.testing.assert_close(ours, upstream)


def test_mask_box_convention() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    assert mask_box(mask) is None
    mask[3, 4] = True
    np.testing.assert_array_equal(mask_box(mask), [4, 3, 4, 3])
    mask[7, 9] = True
    np.testing.assert_array_equal(mask_box(mask), [4, 3, 9, 7])
    with pytest.raises(ValueError, match="mask shape"):
        SamGeometry.for_shape(10, 10, 64).mask_to_model(mask)
