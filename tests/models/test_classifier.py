"""Findings classifier: zero-shot-initialised heads, masked BCE, few-shot sampling, blocks."""

from __future__ import annotations

import math

import pytest
import torch

from medvl.models import PromptBank, ZeroShotClassifier
from medvl.models.classifier import (
    FindingsClassifier,
    few_shot_indices,
    image_tower_blocks,
    masked_bce,
)

FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax")
NAN = math.nan


@pytest.mark.parametrize("kind", ["linear", "prompt"])
def test_head_starts_as_the_zero_shot_classifier(tiny_aligner, kind):
    prompts = PromptBank.from_yaml().subset(FINDINGS)
    pixels = torch.rand(5, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = ZeroShotClassifier(tiny_aligner, prompts).predict_proba(pixels)
    model = FindingsClassifier(tiny_aligner, prompts, kind).eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(pixels))
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    assert model.findings == FINDINGS


def test_prompt_head_sends_gradient_into_the_text_tower(tiny_aligner):
    prompts = PromptBank.from_yaml().subset(FINDINGS)
    model = FindingsClassifier(tiny_aligner, prompts, "prompt")
    loss = masked_bce(model(torch.rand(2, 1, 64, 64)), torch.tensor([[1.0, 0.0, NAN]] * 2))
    loss.backward()
    grads = [p.grad for p in tiny_aligner.text_tower.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_prompt_head_folds_into_an_equal_linear_head(tiny_aligner):
    prompts = PromptBank.from_yaml().subset(FINDINGS)
    model = FindingsClassifier(tiny_aligner, prompts, "prompt").eval()
    with torch.no_grad():
        model.head.log_scale.add_(torch.tensor([0.3, -0.2, 0.1]))  # as if trained
        model.head.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    embeds = torch.nn.functional.normalize(torch.randn(6, tiny_aligner.config.embed_dim), dim=-1)
    with torch.no_grad():
        expected = model.classify(embeds)
        folded = model.head.to_linear(tiny_aligner)(embeds)
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-5)


def test_masked_bce_ignores_unknown_and_follows_the_uncertain_policy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[1.0, NAN, -1.0], [0.0, 1.0, NAN]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    known = bce(torch.tensor([2.0, 0.0, 3.0]), torch.tensor([1.0, 0.0, 1.0]))
    assert masked_bce(logits, labels, "ignore") == pytest.approx(float(known))
    ones = bce(torch.tensor([2.0, 0.5, 0.0, 3.0]), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert masked_bce(logits, labels, "positive") == pytest.approx(float(ones))
    zeros = bce(torch.tensor([2.0, 0.5, 0.0, 3.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert masked_bce(logits, labels, "negative") == pytest.approx(float(zeros))
    empty = masked_bce(logits.requires_grad_(), torch.full((2, 3), NAN))
    assert empty.item() == 0.0 and empty.requires_grad


def test_few_shot_sampling_is_deterministic_and_order_free():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (40, 3), generator=g).float()
    labels[::7, 1] = NAN
    ids = [f"study-{i:03d}" for i in range(40)]
    picked = few_shot_indices(labels, ids, k=2, seed=3)
    assert picked == few_shot_indices(labels, ids, k=2, seed=3)
    for column in range(3):
        chosen = labels[picked, column]
        assert (chosen == 1).sum() >= 2 and (chosen == 0).sum() >= 2
    assert len(picked) <= 12
    order = list(reversed(range(40)))  # same studies in another manifest order
    again = few_shot_indices(labels[order], [ids[i] for i in order], k=2, seed=3)
    assert sorted(ids[order[i]] for i in again) == sorted(ids[i] for i in picked)
    assert few_shot_indices(labels, ids, k=2, seed=4) != picked


def test_image_tower_blocks_of_the_tiny_cnn(tiny_aligner):
    blocks = image_tower_blocks(tiny_aligner.image_tower)
    assert len(blocks) == 4
    with pytest.raises(ValueError, match="block list"):
        image_tower_blocks(torch.nn.Linear(2, 2))
