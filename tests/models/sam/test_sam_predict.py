"""SamSegmenter: masks in original geometry; volumes slice by slice with per-slice prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvl.eval.segmentation import case_metrics
from medvl.models.sam import SamConfig, build_sam
from medvl.models.sam.predict import SamSegmenter, SegPrediction
from medvl.models.sam.prompts import box3d_from_mask


@pytest.fixture(scope="module")
def segmenter() -> SamSegmenter:
    return SamSegmenter(build_sam(SamConfig(variant="tiny", img_size=64)), device="cpu")


def _sphere(z: int = 9, h: int = 40, w: int = 56) -> np.ndarray:
    zz, yy, xx = np.mgrid[:z, :h, :w]
    return ((zz - 4) / 3.2) ** 2 + ((yy - 20) / 12) ** 2 + ((xx - 30) / 15) ** 2 <= 1


def test_predict_returns_masks_in_the_original_shape(segmenter) -> None:
    image = np.random.default_rng(0).random((90, 50), dtype=np.float32)
    pred = segmenter.predict(image, boxes=np.array([[5, 10, 40, 80], [0, 0, 49, 89]]))
    assert pred.masks.shape == (2, 90, 50) and pred.masks.dtype == bool
    assert pred.scores.shape == (2,) and pred.low_res_logits.shape == (2, 16, 16)
    clicks = segmenter.predict(
        image, points=np.array([[20, 30], [5, 5]]), point_labels=np.array([1, 0])
    )
    assert clicks.masks.shape == (1, 90, 50)
    with pytest.raises(ValueError):
        segmenter.predict(image)


def _box_filler(segmenter: SamSegmenter, calls: list) -> None:
    """Replace decoding by 'fill the prompted box' to check the slice bookkeeping exactly."""

    def decode(embeddings, geometries, boxes=None, points=None, point_labels=None):
        calls.append(len(geometries))
        masks = np.zeros((len(geometries), *geometries[0].original_size), dtype=bool)
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes).round().astype(int)):
            masks[i, y0 : y1 + 1, x0 : x1 + 1] = True
        return SegPrediction(
            masks, np.ones(len(masks)), torch.zeros(len(masks), 1, 1), np.zeros(len(masks), int)
        )

    segmenter.decode = decode  # type: ignore[method-assign]


def test_volume_box3d_prompts_each_slice_in_range() -> None:
    seg = SamSegmenter(
        build_sam(SamConfig(variant="tiny", img_size=64)), device="cpu", batch_size=4
    )
    calls: list[int] = []
    _box_filler(seg, calls)
    truth = _sphere()
    z0, z1, box = box3d_from_mask(truth)
    result = seg.predict_volume(truth.astype(np.float32), box, (z0, z1), mode="box3d")
    assert result.mask.shape == truth.shape
    assert sorted(result.boxes) == list(range(z0, z1 + 1))
    assert calls == [4, 3]  # 7 slices in batches of 4: one decoder call per batch
    assert not result.mask[:z0].any() and not result.mask[z1 + 1 :].any()
    x0, y0, x1, y1 = box.astype(int)
    assert result.mask[z0 : z1 + 1, y0 : y1 + 1, x0 : x1 + 1].all()


def test_volume_propagation_follows_the_structure() -> None:
    seg = SamSegmenter(build_sam(SamConfig(variant="tiny", img_size=64)), device="cpu")
    truth = _sphere()
    volume = truth.astype(np.float32)
    base = volume.__array_interface__["data"][0]
    seen: list[int] = []
    real_embed = seg.embed

    def embed(images):  # note which slice is being prompted (by its address in the volume)
        seen.append((images[0].__array_interface__["data"][0] - base) // volume.strides[0])
        return real_embed(images)

    def decode(embeddings, geometries, boxes=None, points=None, point_labels=None):
        # an oracle decoder: the structure's pixels inside the prompted box
        x0, y0, x1, y1 = np.asarray(boxes[0]).round().astype(int)
        mask = np.zeros(truth.shape[1:], dtype=bool)
        mask[y0 : y1 + 1, x0 : x1 + 1] = truth[seen[-1], y0 : y1 + 1, x0 : x1 + 1]
        return SegPrediction(mask[None], np.ones(1), torch.zeros(1, 1, 1), np.zeros(1, int))

    seg.embed, seg.decode = embed, decode  # type: ignore[method-assign]
    start_box = np.array([14, 7, 46, 33], dtype=float)  # drawn on the middle slice
    result = seg.predict_volume(volume, start_box, mode="propagate", margin_px=3)
    assert seen == [4, 5, 6, 7, 8, 3, 2, 1, 0]  # up from the middle, then down
    np.testing.assert_array_equal(result.mask, truth)
    np.testing.assert_array_equal(result.boxes[4], start_box)
    assert result.boxes[5][0] < start_box[0]  # grown from slice 4's mask plus the margin
    metrics = case_metrics(result.mask, truth, (2.5, 0.8, 0.8), structure="sphere")
    assert metrics.dice == 1.0 and metrics.nsd == 1.0


def test_volume_with_the_real_tiny_model(segmenter) -> None:
    volume = _sphere().astype(np.float32)
    result = segmenter.predict_volume(volume, [10, 5, 50, 35], (2, 6))
    assert result.mask.shape == volume.shape and result.mask.dtype == bool
    assert sorted(result.scores) == [2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="outside"):
        segmenter.predict_volume(volume, [0, 0, 5, 5], (3, 12))
