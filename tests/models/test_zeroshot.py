"""Zero-shot classification: prompt bank, the probability rule, caching, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, roc_auc_score

from medvl.findings import CHEXPERT_14, NO_FINDING
from medvl.models import PromptBank, ZeroShotClassifier, embed_texts, retrieval_scores
from medvl.models.zeroshot import FindingPrompts


def test_default_prompts_cover_chexpert14_with_written_prompts() -> None:
    bank = PromptBank.from_yaml()
    assert bank.findings == CHEXPERT_14
    for name in bank.findings:
        positive, negative = bank[name]
        assert len(positive) >= 3 and len(negative) >= 3
        assert not any("{" in prompt for prompt in positive + negative)
        templated = {name.lower(), f"no {name.lower()}"}
        assert len({p.lower().strip(".") for p in positive + negative} - templated) >= 4
    no_finding = bank[NO_FINDING]
    assert not any("no finding" in p.lower() for p in no_finding.positive + no_finding.negative)


def test_prompt_file_errors_name_the_finding(tmp_path) -> None:
    path = tmp_path / "prompts.yaml"
    path.write_text("findings:\n  Edema:\n    positive: [Edema.]\n")
    with pytest.raises(ValueError, match=r"prompts.yaml: finding 'Edema' needs exactly"):
        PromptBank.from_yaml(path)
    path.write_text("findings:\n  Edema:\n    positive: [Edema.]\n    negative: [Edema.]\n")
    with pytest.raises(ValueError, match="in both sets"):
        PromptBank.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        PromptBank.from_yaml(tmp_path / "missing.yaml")


def test_probability_is_softmax_over_mean_prompt_similarities(tiny_aligner, pixels) -> None:
    bank = PromptBank.from_yaml().subset(["Cardiomegaly", "Pneumothorax"])
    classifier = ZeroShotClassifier(tiny_aligner, bank)
    tiny_aligner.eval()
    with torch.no_grad():
        images = tiny_aligner.encode_image(pixels)
    scale = tiny_aligner.logit_scale.item()
    expected = []
    for name in bank.findings:
        pos = embed_texts(tiny_aligner, list(bank[name].positive))
        neg = embed_texts(tiny_aligner, list(bank[name].negative))
        logits = torch.stack([(images @ pos.T).mean(1), (images @ neg.T).mean(1)], dim=1)
        expected.append(torch.softmax(scale * logits, dim=1)[:, 0])
    expected = torch.stack(expected, dim=1)
    torch.testing.assert_close(classifier.predict_proba(images), expected)
    torch.testing.assert_close(classifier.predict_proba(pixels), expected)
    fixed = ZeroShotClassifier(tiny_aligner, bank, temperature=0.5)
    margins = classifier.margins(images)
    torch.testing.assert_close(fixed.predict_proba(images), torch.sigmoid(2.0 * margins))


def _aligned_embeddings(classifier: ZeroShotClassifier, labels: np.ndarray) -> torch.Tensor:
    """Image embeddings whose margin s+ - s- is +c for every present and -c for absent finding."""
    prompts = classifier.prompt_embeddings()
    directions = (prompts[:, 0] - prompts[:, 1]).double()  # (F, D)
    targets = torch.tensor(2.0 * labels - 1.0, dtype=torch.float64)  # (N, F)
    solution = torch.linalg.pinv(directions) @ targets.T  # (D, N), least norm
    return F.normalize(solution.T.float(), dim=-1)


def test_perfectly_aligned_space_gives_auroc_one(tiny_aligner) -> None:
    bank = PromptBank.from_yaml()
    classifier = ZeroShotClassifier(tiny_aligner, bank)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(40, len(bank))).astype(float)
    probs = classifier.predict_proba(_aligned_embeddings(classifier, labels)).numpy()
    for j in range(len(bank)):
        assert roc_auc_score(labels[:, j], probs[:, j]) == 1.0
    assert np.all((probs > 0.5) == (labels == 1))


def test_prompt_embeddings_are_cached_until_text_weights_change(tiny_aligner) -> None:
    classifier = ZeroShotClassifier(tiny_aligner, PromptBank.from_yaml().subset(["Edema"]))
    first = classifier.prompt_embeddings()
    assert classifier.prompt_embeddings() is first
    with torch.no_grad():
        tiny_aligner.image_projection.weight.mul_(2.0)  # image side: cache stays valid
    assert classifier.prompt_embeddings() is first
    optimizer = torch.optim.SGD(tiny_aligner.text_projection.parameters(), lr=0.1)
    tiny_aligner.text_projection.weight.sum().backward()
    optimizer.step()
    second = classifier.prompt_embeddings()
    assert second is not first and not torch.equal(second, first)
    tiny_aligner.text_tower.model.encoder.layer[0].output.dense.weight.data.mul_(0.5)
    third = classifier.prompt_embeddings()
    assert third is not second and not torch.equal(third, second)


def test_embedding_prompts_restores_training_mode(tiny_aligner) -> None:
    tiny_aligner.train()
    ZeroShotClassifier(tiny_aligner, PromptBank.from_yaml()).prompt_embeddings()
    assert tiny_aligner.training


def test_calibration_recovers_temperature_and_best_f1_threshold(tiny_aligner, tmp_path) -> None:
    bank = PromptBank({"A": FindingPrompts(("a is present",), ("a is absent",))})
    classifier = ZeroShotClassifier(tiny_aligner, bank)
    rng = np.random.default_rng(1)
    margins = rng.uniform(-0.3, 0.3, size=(4000, 1))
    true_scale = 12.0
    labels = (rng.random((4000, 1)) < 1 / (1 + np.exp(-true_scale * margins))).astype(float)
    labels[:50] = np.nan  # unknown labels are ignored
    classifier.margins = lambda x: torch.tensor(margins, dtype=torch.float32)
    report = classifier.calibrate(torch.zeros(4000, 64), torch.tensor(labels))
    assert report["A"]["fitted"]
    assert 1.0 / report["A"]["temperature"] == pytest.approx(true_scale, rel=0.15)
    probs = classifier.predict_proba(torch.zeros(4000, 64)).numpy()[50:, 0]
    known = labels[50:, 0]
    decisions = probs[None, :] >= np.unique(probs)[:, None]  # one row per candidate threshold
    tp = (decisions & (known == 1)).sum(1)
    f1_all = 2 * tp / (decisions.sum(1) + (known == 1).sum())
    best = f1_all.max()
    assert report["A"]["f1"] == pytest.approx(best, abs=1e-9)
    assert f1_score(known, probs >= classifier.thresholds[0].item()) == pytest.approx(best)

    saved = classifier.save_calibration(tmp_path / "calibration.json")
    fresh = ZeroShotClassifier(tiny_aligner, bank)
    fresh.load_calibration(saved)
    torch.testing.assert_close(fresh.finding_scales(), classifier.finding_scales())
    torch.testing.assert_close(fresh.thresholds, classifier.thresholds)


def test_calibration_skips_single_class_findings(tiny_aligner) -> None:
    bank = PromptBank.from_yaml().subset(["Edema", "Fracture"])
    classifier = ZeroShotClassifier(tiny_aligner, bank)
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, float("nan")], [0.0, -1.0]])
    report = classifier.calibrate(torch.randn(4, 64), labels)
    assert report["Fracture"] == {"fitted": False, "reason": "needs both classes", "n": 2}
    assert classifier.thresholds[1].item() == 0.5
    assert classifier.finding_scales()[1].item() == pytest.approx(tiny_aligner.logit_scale.item())


def test_retrieval_scores_are_cosines() -> None:
    images = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    expected = torch.tensor([[1.0, 0.0, math.sqrt(0.5)], [math.sqrt(0.5), math.sqrt(0.5), 1.0]])
    torch.testing.assert_close(retrieval_scores(images, texts), expected)
