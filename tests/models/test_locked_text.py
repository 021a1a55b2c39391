"""Locked text tower: cached report features give the aligner's own text embeddings."""

from __future__ import annotations

import pytest
import torch

from medvl.models import ContrastiveLoss
from medvl.models.locked_text import LockedTextAligner

TEXTS = ["Heart size is normal.", "Large left pleural effusion.", "Small right pneumothorax."]


def test_cached_features_match_the_live_text_tower(tiny_aligner):
    pixels = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    tiny_aligner.eval()
    with torch.no_grad():
        live = tiny_aligner(pixels, **tiny_aligner.tokenize(TEXTS))
    locked = LockedTextAligner(tiny_aligner, [*TEXTS, TEXTS[0]]).eval()
    assert locked.text_features.shape[0] == 3  # duplicates encoded once
    with torch.no_grad():
        cached = locked(pixels, TEXTS)
    torch.testing.assert_close(cached["text_embeds"], live["text_embeds"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cached["image_embeds"], live["image_embeds"])


def test_only_the_image_side_and_projections_learn(tiny_aligner):
    locked = LockedTextAligner(tiny_aligner, TEXTS).train()
    assert not tiny_aligner.text_tower.training  # dropout of the locked tower stays off
    out = locked(torch.rand(3, 1, 64, 64), TEXTS)
    ContrastiveLoss()(out["image_embeds"], out["text_embeds"], out["logit_scale"]).backward()
    assert all(p.grad is None for p in tiny_aligner.text_tower.parameters())
    assert tiny_aligner.text_projection.weight.grad is not None
    assert any(p.grad is not None for p in tiny_aligner.image_tower.parameters())
    with pytest.raises(KeyError, match="not among the texts"):
        locked(torch.rand(1, 1, 64, 64), ["Never seen."])
