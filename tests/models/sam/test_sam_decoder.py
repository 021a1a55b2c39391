"""The batched decoder call equals upstream MaskDecoder called image by image."""

from __future__ import annotations

import pytest
import torch

from medvl.models.sam import SamConfig, build_sam
from medvl.models.sam.decoder import decode_masks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_sam(SamConfig(variant="tiny", img_size=64))
    with torch.no_grad():  # non-trivial decoder weights (random init leaves some at zero)
        for p in m.mask_decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _prompts(model, b: int, with_points: bool):
    g = torch.Generator().manual_seed(3)
    boxes = torch.rand(b, 4, generator=g) * 60
    boxes = torch.cat([boxes[:, :2].minimum(boxes[:, 2:]), boxes[:, :2].maximum(boxes[:, 2:])], 1)
    points = labels = None
    if with_points:
        points = torch.rand(b, 3, 2, generator=g) * 64
        labels = torch.tensor([[1.0, 0.0, -1.0]] * b)
    return boxes, points, labels


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("with_points", [False, True])
@torch.no_grad()
def test_batched_equals_upstream_per_image(model, multimask: bool, with_points: bool) -> None:
    b = 5
    emb = torch.randn(b, 32, 4, 4, generator=torch.Generator().manual_seed(1))
    boxes, points, labels = _prompts(model, b, with_points)
    pe = model.prompt_encoder.get_dense_pe()
    pts = None if points is None else (points, labels)
    sparse, dense = model.prompt_encoder(points=pts, boxes=boxes, masks=None)
    masks, iou = decode_masks(model.mask_decoder, emb, pe, sparse, dense, multimask=multimask)
    assert masks.shape == (b, 3 if multimask else 1, 16, 16)
    for i in range(b):
        pts_i = None if points is None else (points[i : i + 1], labels[i : i + 1])
        sp, de = model.prompt_encoder(points=pts_i, boxes=boxes[i : i + 1], masks=None)
        ref_masks, ref_iou = model.mask_decoder(
            emb[i : i + 1], pe, sp, de, multimask_output=multimask
        )
        torch.testing.assert_close(masks[i : i + 1], ref_masks, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(iou[i : i + 1], ref_iou, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_several_prompts_per_image_match_upstream(model) -> None:
    emb = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(2))
    boxes, _, _ = _prompts(model, 4, False)
    pe = model.prompt_encoder.get_dense_pe()
    sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
    masks, _ = decode_masks(model.mask_decoder, emb, pe, sparse, dense, prompts_per_image=2)
    for i in range(2):  # upstream: one image, many prompts (its own use case)
        ref, _ = model.mask_decoder(
            emb[i : i + 1], pe, sparse[2 * i : 2 * i + 2], dense[2 * i : 2 * i + 2], False
        )
        torch.testing.assert_close(masks[2 * i : 2 * i + 2], ref, rtol=1e-5, atol=1e-5)


def test_upstream_breaks_on_b_images_b_prompts(model) -> None:
    """The reason this module exists: upstream pairs every image with every prompt."""
    emb = torch.randn(3, 32, 4, 4)
    boxes, _, _ = _prompts(model, 3, False)
    sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
    pe = model.prompt_encoder.get_dense_pe()
    with pytest.raises(RuntimeError):
        model.mask_decoder(emb, pe, sparse, dense, multimask_output=False)
    with pytest.raises(ValueError, match="prompts each"):
        decode_masks(model.mask_decoder, emb, pe, sparse[:2], dense[:2])
