"""Classification and retrieval metrics (scikit-learn where it has them).

Labels follow the CheXpert codes: 1 present, 0 absent, -1 uncertain, NaN unknown (not
mentioned). Unknown labels are left out per finding; uncertain ones are left out too unless
``uncertain="positive"``/``"negative"`` says how to count them. A finding whose remaining
labels hold only one class has no AUROC, AUPRC or F1 (reported as ``None``, left out of the
macro average) -- a single-class AUROC is undefined, and averaging in a fake 0.5 hides that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

UncertainPolicy = Literal["ignore", "positive", "negative"]


def as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def binary_labels(labels: Any, uncertain: UncertainPolicy = "ignore") -> np.ndarray:
    """Map 1/0/-1/NaN to 1/0/NaN following ``uncertain``."""
    y = as_numpy(labels)
    out = np.where((y == 1) | (y == 0), y, np.nan)
    if uncertain != "ignore":
        out = np.where(y == -1, float(uncertain == "positive"), out)
    return out


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE of binary probabilities: sum over equal-width bins of ``|acc - conf| * n_bin / N``.

    Bins are ``[0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1]``; ``acc`` is the fraction of positives
    in a bin and ``conf`` its mean predicted probability.
    """
    p, y = as_numpy(probs).ravel(), as_numpy(labels).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probs {p.shape} and labels {y.shape} differ in shape")
    if p.size == 0:
        raise ValueError("ECE of an empty set is undefined")
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        total += abs(y[in_bin].mean() - p[in_bin].mean()) * in_bin.sum()
    return float(total / p.size)


def _thresholds(threshold: float | Sequence[float], n: int) -> list[float]:
    if isinstance(threshold, (int, float)):
        return [float(threshold)] * n
    values = [float(t) for t in threshold]
    if len(values) != n:
        raise ValueError(f"got {len(values)} thresholds for {n} findings")
    return values


def classification_metrics(
    probs: Any,
    labels: Any,
    findings: Sequence[str],
    threshold: float | Sequence[float] = 0.5,
    uncertain: UncertainPolicy = "ignore",
    n_bins: int = 15,
) -> dict[str, Any]:
    """Per-finding and macro AUROC, AUPRC, F1 at a threshold, and ECE.

    Parameters
    ----------
    probs
        ``(N, F)`` predicted probabilities.
    labels
        ``(N, F)`` CheXpert codes (NaN unknown).
    findings
        The ``F`` finding names, in column order.
    threshold
        One decision threshold, or one per finding, for F1.

    Returns
    -------
    dict
        ``{"per_finding": {name: {auroc, auprc, f1, ece, threshold, n, n_positive}},
        "macro": {auroc, auprc, f1, ece, n_findings}}``; macro averages skip ``None``.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    p = as_numpy(probs)
    y = binary_labels(labels, uncertain)
    if p.shape != y.shape or p.ndim != 2 or p.shape[1] != len(findings):
        raise ValueError(
            f"probs {p.shape}, labels {y.shape} and {len(findings)} findings do not agree"
        )
    cuts = _thresholds(threshold, len(findings))
    per: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(findings):
        pj, yj = _known(p, y, j)
        row: dict[str, Any] = {
            "n": yj.size,
            "n_positive": int(yj.sum()),
            "threshold": cuts[j],
            "auroc": None,
            "auprc": None,
            "f1": None,
            "ece": expected_calibration_error(pj, yj, n_bins) if yj.size else None,
        }
        if _both_classes(yj):
            row["auroc"] = float(roc_auc_score(yj, pj))
            row["auprc"] = float(average_precision_score(yj, pj))
            row["f1"] = float(f1_score(yj, pj >= cuts[j], zero_division=0.0))
        per[name] = row

    valid = [row for row in per.values() if row["auroc"] is not None]

    def macro(key: str) -> float | None:
        values = [row[key] for row in valid if row[key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "per_finding": per,
        "macro": {
            "auroc": macro("auroc"),
            "auprc": macro("auprc"),
            "f1": macro("f1"),
            "ece": macro("ece"),
            "n_findings": len(valid),
        },
    }


def _known(p: np.ndarray, y: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Column ``j`` of ``p`` and ``y`` on the rows whose label is known (not NaN)."""
    keep = ~np.isnan(y[:, j])
    return p[keep, j], y[keep, j]


def _both_classes(y: np.ndarray) -> bool:
    """Whether 0/1 labels ``y`` hold a positive and a negative (AUROC is defined)."""
    return 0 < y.sum() < y.size


def _macro_auroc(p: np.ndarray, y: np.ndarray) -> float:
    """Mean AUROC over the columns of ``y`` (0/1, NaN unknown) that hold both classes.

    AUROC as the Mann-Whitney U statistic of average ranks (ties count one half), which is
    what ``roc_auc_score`` returns, at a tenth of its per-call cost: a bootstrap calls this
    for every resample.
    """
    from scipy.stats import rankdata

    values = []
    for j in range(y.shape[1]):
        pj, yj = _known(p, y, j)
        if _both_classes(yj):
            positives = yj.sum()
            u = rankdata(pj)[yj == 1].sum() - positives * (positives + 1) / 2
            values.append(u / (positives * (yj.size - positives)))
    return float(np.mean(values)) if values else math.nan


def paired_auroc_gain(
    probs_after: Any,
    probs_before: Any,
    labels: Any,
    uncertain: UncertainPolicy = "ignore",
    confidence: float = 0.95,
    resamples: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """Macro AUROC of ``probs_after`` minus ``probs_before`` on the same studies, with a CI.

    The interval is a paired percentile bootstrap over studies (``scipy.stats.bootstrap``):
    both models are scored on each resample, so a gain smaller than what a small test split
    can resolve shows an interval that spans zero. Findings without both classes in a resample
    are left out of that resample's macro.

    Returns
    -------
    dict
        ``{"gain", "low", "high", "confidence", "n"}``.
    """
    from scipy.stats import bootstrap

    after, before = as_numpy(probs_after), as_numpy(probs_before)
    y = binary_labels(labels, uncertain)
    if after.shape != before.shape or after.shape != y.shape:
        raise ValueError(f"probs {after.shape}, {before.shape} and labels {y.shape} do not agree")

    def gain(rows: np.ndarray) -> float:
        rows = rows.astype(int)
        return _macro_auroc(after[rows], y[rows]) - _macro_auroc(before[rows], y[rows])

    interval = bootstrap(
        (np.arange(len(y)),), gain, vectorized=False, confidence_level=confidence,
        n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed),
    ).confidence_interval  # fmt: skip
    return {
        "gain": gain(np.arange(len(y))),
        "low": float(interval.low),
        "high": float(interval.high),
        "confidence": confidence,
        "n": len(y),
    }


def _ranks(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of the best relevant candidate per query row.

    Ties with irrelevant candidates count against the model (a constant similarity ranks
    every query last among its ties, never first).
    """
    masked = np.where(relevant, similarity, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    beaten_or_tied = ((similarity >= best) & ~relevant).sum(axis=1)
    return beaten_or_tied + 1


def _direction(similarity: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    has_match = relevant.any(axis=1)
    if not has_match.any():
        raise ValueError("no query has a relevant candidate")
    ranks = _ranks(similarity[has_match], relevant[has_match])
    out: dict[str, Any] = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    out["n_queries"] = int(has_match.sum())
    out["n_candidates"] = int(similarity.shape[1])
    out["chance"] = {f"R@{k}": min(1.0, k / similarity.shape[1]) for k in ks}
    return out


def retrieval_metrics(
    similarity: Any,
    image_groups: Sequence[Any] | None = None,
    text_groups: Sequence[Any] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Recall@k and median rank for image-to-text and text-to-image retrieval.

    Parameters
    ----------
    similarity
        ``(N_images, N_texts)`` scores; higher is more similar.
    image_groups, text_groups
        Ground-truth group of each image and each text (e.g. the study id); a candidate is
        relevant when its group equals the query's. Both ``None``: row i matches column i.

    Returns
    -------
    dict
        ``{"image_to_text": {R@k, median_rank, mean_rank, n_queries, n_candidates, chance},
        "text_to_image": {...}}``; ``chance`` is R@k of a random ranking with one relevant
        candidate, ``k / n_candidates``.
    """
    s = as_numpy(similarity)
    if s.ndim != 2:
        raise ValueError(f"similarity must be 2-D, got shape {s.shape}")
    if (image_groups is None) != (text_groups is None):
        raise ValueError("give both image_groups and text_groups, or neither")
    if image_groups is None:
        if s.shape[0] != s.shape[1]:
            raise ValueError(f"without groups the similarity must be square, got {s.shape}")
        relevant = np.eye(s.shape[0], dtype=bool)
    else:
        ig, tg = np.asarray(list(image_groups)), np.asarray(list(text_groups or []))
        if ig.shape[0] != s.shape[0] or tg.shape[0] != s.shape[1]:
            raise ValueError(f"groups ({ig.shape[0]}, {tg.shape[0]}) do not fit {s.shape}")
        relevant = ig[:, None] == tg[None, :]
    return {
        "image_to_text": _direction(s, relevant, ks),
        "text_to_image": _direction(s.T, relevant.T, ks),
    }


def nan_to_none(data: Any) -> Any:
    """Replace NaN/inf floats by ``None`` recursively, so results serialise as strict JSON."""
    if isinstance(data, dict):
        return {k: nan_to_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [nan_to_none(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data
