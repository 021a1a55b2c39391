"""Loss values against hand computation, label similarity rules, and gradient flow."""

from __future__ import annotations

import math

import pytest
import torch

from medvl.models.losses import (
    ContrastiveLoss,
    SemanticMatchingLoss,
    label_similarity,
    label_vectors,
)

NAN = float("nan")


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_infonce_equals_hand_computation() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = 2 * I T^T = [[2, 1.2], [0, 1.6]]; CE of row i with target i is
    # log(1 + exp(other - own)) for two columns.
    image_to_text = (softplus(1.2 - 2.0) + softplus(0.0 - 1.6)) / 2
    text_to_image = (softplus(0.0 - 2.0) + softplus(1.2 - 1.6)) / 2
    expected = (image_to_text + text_to_image) / 2
    loss = ContrastiveLoss()(image, text, torch.tensor(2.0))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_infonce_three_pairs_matches_logsumexp_formula() -> None:
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    z = (5.0 * image @ text.T).tolist()
    rows = [math.log(sum(math.exp(v) for v in z[i])) - z[i][i] for i in range(3)]
    cols = [math.log(sum(math.exp(z[j][i]) for j in range(3))) - z[i][i] for i in range(3)]
    expected = (sum(rows) / 3 + sum(cols) / 3) / 2
    assert ContrastiveLoss()(image, text, torch.tensor(5.0)).item() == pytest.approx(expected)


def test_infonce_rejects_mismatched_batches() -> None:
    with pytest.raises(ValueError, match="matched"):
        ContrastiveLoss()(torch.zeros(2, 3), torch.zeros(3, 3), torch.tensor(1.0))


def test_label_vectors_map_codes_explicitly() -> None:
    labels = torch.tensor([[1.0, 0.0, -1.0, NAN]])
    assert label_vectors(labels).tolist() == [[1.0, 0.0, 0.5, 0.0]]
    assert label_vectors(labels, uncertain=1.0, unmentioned=0.0).tolist() == [[1, 0, 1, 0]]
    with pytest.raises(ValueError, match="not a CheXpert code"):
        label_vectors(torch.tensor([[2.0]]))


def test_label_similarity_is_cosine_in_unit_interval() -> None:
    a = torch.tensor([[1.0, -1.0], [1.0, 1.0], [NAN, NAN]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sim = label_similarity(a, b)
    expected = [[1 / math.sqrt(1.25), 0.5 / math.sqrt(1.25)], [1 / math.sqrt(2)] * 2, [0.0, 0.0]]
    torch.testing.assert_close(sim, torch.tensor(expected))


def test_semantic_matching_equals_hand_computation() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    image_labels = torch.tensor([[1.0, NAN], [1.0, 1.0]])  # vectors (1,0) and (1,1)
    text_labels = torch.tensor([[1.0, 0.0], [NAN, 1.0]])  # vectors (1,0) and (0,1)
    z = [[2.0, 1.2], [0.0, 1.6]]  # 2 * I T^T

    def log_softmax(row: list[float], i: int) -> float:
        return row[i] - math.log(sum(math.exp(v) for v in row))

    r = 1 / math.sqrt(2)
    # image rows: S = [[1, 0], [r, r]] -> targets [1, 0] and [1/2, 1/2]
    image_term = (-log_softmax(z[0], 0) - 0.5 * (log_softmax(z[1], 0) + log_softmax(z[1], 1))) / 2
    # text rows over images: S^T = [[1, r], [0, r]] -> targets [1, r]/(1+r) and [0, 1]
    zt = [[z[0][0], z[1][0]], [z[0][1], z[1][1]]]
    t0 = -(log_softmax(zt[0], 0) + r * log_softmax(zt[0], 1)) / (1 + r)
    t1 = -log_softmax(zt[1], 1)
    expected = (image_term + (t0 + t1) / 2) / 2
    loss = SemanticMatchingLoss()(image, text, torch.tensor(2.0), image_labels, text_labels)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_semantic_matching_all_same_label_gives_uniform_targets() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    labels = torch.tensor([[1.0, NAN], [1.0, NAN]])  # two normal studies, say
    z = [[2.0, 1.2], [0.0, 1.6]]

    def uniform_ce(row: list[float]) -> float:  # logsumexp - mean
        return math.log(sum(math.exp(v) for v in row)) - sum(row) / len(row)

    cols = [[z[0][0], z[1][0]], [z[0][1], z[1][1]]]
    expected = (
        (uniform_ce(z[0]) + uniform_ce(z[1])) / 2 + (uniform_ce(cols[0]) + uniform_ce(cols[1])) / 2
    ) / 2
    loss = SemanticMatchingLoss()(image, text, torch.tensor(2.0), labels, labels)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_semantic_matching_reduces_to_infonce_for_distinct_findings() -> None:
    torch.manual_seed(1)
    image = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.tensor([[1.0, NAN, 0.0], [0.0, 1.0, NAN], [NAN, 0.0, 1.0]])
    scale = torch.tensor(7.0)
    semantic = SemanticMatchingLoss()(image, text, scale, labels, labels)
    assert semantic.item() == pytest.approx(ContrastiveLoss()(image, text, scale).item())


def test_items_without_label_signal_are_left_out_unless_paired() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    labels = torch.tensor([[1.0, NAN], [NAN, NAN]])  # second study: nothing mentioned
    scale = torch.tensor(2.0)
    unpaired = SemanticMatchingLoss()(image, text, scale, labels, labels)
    # only image 0 -> text 0 and text 0 -> image 0 have targets (each a one-hot)
    z = [[2.0, 1.2], [0.0, 1.6]]
    only_first = (softplus(z[0][1] - z[0][0]) + softplus(z[1][0] - z[0][0])) / 2
    assert unpaired.item() == pytest.approx(only_first, rel=1e-6)
    paired = SemanticMatchingLoss()(image, text, scale, labels, labels, paired=True)
    assert paired.item() == pytest.approx(ContrastiveLoss()(image, text, scale).item())


def test_semantic_matching_accepts_unpaired_batches_of_other_sizes() -> None:
    torch.manual_seed(2)
    image = torch.randn(3, 4, requires_grad=True)
    text = torch.randn(5, 4, requires_grad=True)
    image_labels = torch.tensor([[1.0, NAN], [NAN, 1.0], [1.0, 1.0]])
    text_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0], [1.0, NAN], [0.0, 0.0]])
    scale = torch.tensor(3.0, requires_grad=True)
    loss = SemanticMatchingLoss()(
        torch.nn.functional.normalize(image, dim=-1),
        torch.nn.functional.normalize(text, dim=-1),
        scale,
        image_labels,
        text_labels,
    )
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert text.grad is not None and text.grad.abs().sum() > 0
    assert scale.grad is not None and scale.grad != 0
    with pytest.raises(ValueError, match="as many images"):
        SemanticMatchingLoss()(image, text, scale, image_labels, text_labels, paired=True)


def test_losses_run_in_float32_under_autocast() -> None:
    torch.manual_seed(3)
    image = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    reference = ContrastiveLoss()(image, text, torch.tensor(50.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ContrastiveLoss()(image, text, torch.tensor(50.0))
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(reference.item(), rel=1e-6)


def test_sigmoid_loss_equals_open_clip_siglip_loss() -> None:
    from open_clip.loss import SigLipLoss

    from medvl.models.losses import SigmoidLoss

    generator = torch.Generator().manual_seed(3)
    image = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    expected = SigLipLoss()(image, text, scale, bias)
    torch.testing.assert_close(SigmoidLoss()(image, text, scale, bias), expected)
    assert SigmoidLoss()(image, text, scale, torch.tensor(0.0)) != expected
