"""Metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from medvl.eval.metrics import (
    classification_metrics,
    expected_calibration_error,
    nan_to_none,
    paired_auroc_gain,
    retrieval_metrics,
)

NAN = float("nan")


def test_classification_metrics_equal_sklearn_on_known_labels() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((30, 2))
    labels = (rng.random((30, 2)) < 0.4).astype(float)
    labels[[0, 5, 9], 0] = NAN  # unknown
    labels[[2, 3], 1] = -1  # uncertain, ignored by default
    result = classification_metrics(probs, labels, ["A", "B"], threshold=[0.5, 0.3])
    for j, name in enumerate(["A", "B"]):
        keep = (labels[:, j] == 0) | (labels[:, j] == 1)
        y, p = labels[keep, j], probs[keep, j]
        row = result["per_finding"][name]
        assert row["n"] == keep.sum() and row["n_positive"] == y.sum()
        assert row["auroc"] == pytest.approx(roc_auc_score(y, p))
        assert row["auprc"] == pytest.approx(average_precision_score(y, p))
        assert row["f1"] == pytest.approx(f1_score(y, p >= [0.5, 0.3][j]))
    macro = result["macro"]
    assert macro["auroc"] == pytest.approx(
        np.mean([result["per_finding"][n]["auroc"] for n in "AB"])
    )
    assert macro["n_findings"] == 2


def _scored_pair(n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels for 3 findings (some unknown), a noisy model and a better one, with tied scores."""
    rng = np.random.default_rng(1)
    labels = (rng.random((n, 3)) < 0.3).astype(float)
    labels[rng.random((n, 3)) < 0.1] = NAN
    signal = np.nan_to_num(labels)
    weak = np.round(0.3 * signal + rng.random((n, 3)), 1)  # rounded: many ties
    strong = np.round(0.9 * signal + rng.random((n, 3)), 1)
    return weak, strong, labels


def test_paired_gain_is_the_sklearn_macro_difference_and_its_interval_excludes_zero() -> None:
    weak, strong, labels = _scored_pair()
    macro = [classification_metrics(p, labels, "ABC")["macro"]["auroc"] for p in (weak, strong)]
    result = paired_auroc_gain(strong, weak, labels, resamples=200)
    assert result["gain"] == pytest.approx(macro[1] - macro[0], abs=1e-12)
    assert 0 < result["low"] < result["gain"] < result["high"]
    assert (result["n"], result["confidence"]) == (200, 0.95)
    assert paired_auroc_gain(strong, weak, labels, resamples=200) == result  # seeded


def test_paired_gain_of_a_model_against_itself_is_exactly_zero() -> None:
    weak, _, labels = _scored_pair()
    result = paired_auroc_gain(weak, weak, labels, resamples=100)
    assert (result["gain"], result["low"], result["high"]) == (0.0, 0.0, 0.0)


def test_paired_gain_interval_is_wide_on_a_small_split() -> None:
    weak, strong, labels = _scored_pair()
    big = paired_auroc_gain(strong, weak, labels, resamples=200)
    small = paired_auroc_gain(strong[:40], weak[:40], labels[:40], resamples=200)
    assert small["high"] - small["low"] > 1.5 * (big["high"] - big["low"])


def test_paired_gain_refuses_mismatched_shapes() -> None:
    weak, strong, labels = _scored_pair()
    with pytest.raises(ValueError, match="do not agree"):
        paired_auroc_gain(strong[:10], weak, labels)


def test_uncertain_policy_counts_uncertain_labels() -> None:
    probs = np.array([[0.9], [0.8], [0.2], [0.1]])
    labels = np.array([[1.0], [-1.0], [0.0], [-1.0]])
    ignored = classification_metrics(probs, labels, ["A"])["per_finding"]["A"]
    positive = classification_metrics(probs, labels, ["A"], uncertain="positive")
    assert ignored["n"] == 2
    assert positive["per_finding"]["A"]["n_positive"] == 3
    assert positive["per_finding"]["A"]["auroc"] == pytest.approx(
        roc_auc_score([1, 1, 0, 1], probs[:, 0])
    )


def test_single_class_finding_is_none_and_left_out_of_macro() -> None:
    probs = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.4]])
    labels = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, NAN]])
    result = classification_metrics(probs, labels, ["A", "B"])
    b = result["per_finding"]["B"]
    assert (b["auroc"], b["auprc"], b["f1"]) == (None, None, None)
    assert b["ece"] == pytest.approx((0.2 + 0.3) / 2)  # calibration is still defined
    assert result["macro"]["auroc"] == result["per_finding"]["A"]["auroc"] == 1.0
    assert result["macro"]["n_findings"] == 1
    json.dumps(nan_to_none(result), allow_nan=False)


def test_ece_hand_examples() -> None:
    probs = [0.1, 0.4, 0.6, 0.9]
    labels = [0, 1, 1, 1]
    # 2 bins: [0, .5) holds .1 and .4 (confidence .25, accuracy .5); [.5, 1] holds .6 and .9
    # (confidence .75, accuracy 1): ECE = (2 * .25 + 2 * .25) / 4
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.25)
    # 10 bins, one prediction each: (.1 + .6 + .4 + .1) / 4
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.3)
    assert expected_calibration_error([1.0, 0.0], [1, 0], n_bins=5) == 0.0
    with pytest.raises(ValueError, match="empty"):
        expected_calibration_error([], [])


def test_retrieval_recall_and_median_rank_on_a_permutation() -> None:
    n = 12
    rng = np.random.default_rng(3)
    # for query i the true report sits at rank ranks[i] (1-based) of a random order
    ranks = np.array([1, 1, 2, 3, 5, 6, 8, 10, 11, 12, 1, 4])
    similarity = np.zeros((n, n))
    for i in range(n):
        others = rng.permutation([c for c in range(n) if c != i])
        order = list(others[: ranks[i] - 1]) + [i] + list(others[ranks[i] - 1 :])
        similarity[i, order] = np.linspace(1.0, 0.0, n)
    result = retrieval_metrics(similarity)["image_to_text"]
    assert result["R@1"] == pytest.approx(np.mean(ranks <= 1))
    assert result["R@5"] == pytest.approx(np.mean(ranks <= 5))
    assert result["R@10"] == pytest.approx(np.mean(ranks <= 10))
    assert result["median_rank"] == np.median(ranks)
    assert result["chance"]["R@5"] == pytest.approx(5 / 12)


def test_retrieval_with_a_permuted_identity_and_both_directions() -> None:
    perm = np.array([2, 0, 1, 3])
    similarity = np.eye(4)[perm]  # image i is most similar to report perm[i]
    result = retrieval_metrics(similarity)
    assert result["image_to_text"]["R@1"] == 0.25  # only image 3 maps to itself
    assert result["text_to_image"]["R@1"] == 0.25
    perfect = retrieval_metrics(similarity, image_groups=perm, text_groups=range(4))
    assert perfect["image_to_text"]["R@1"] == perfect["text_to_image"]["R@1"] == 1.0


def test_retrieval_groups_and_pessimistic_ties() -> None:
    similarity = np.array([[0.9, 0.1, 0.9], [0.5, 0.5, 0.5]])
    result = retrieval_metrics(
        similarity, image_groups=["s1", "s2"], text_groups=["s1", "s2", "s3"]
    )
    i2t = result["image_to_text"]
    # image 0: relevant report 0 ties with irrelevant report 2 -> rank 2; image 1: ties -> rank 3
    assert i2t["median_rank"] == 2.5
    assert i2t["R@1"] == 0.0
    t2i = result["text_to_image"]
    assert t2i["n_queries"] == 2  # report s3 has no image and is not a query
    with pytest.raises(ValueError, match="both image_groups and text_groups"):
        retrieval_metrics(similarity, image_groups=["a", "b"])
    with pytest.raises(ValueError, match="must be square"):
        retrieval_metrics(similarity)
