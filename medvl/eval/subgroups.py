"""Findings metrics stratified by header fields, and the worst subgroup's gap to the whole.

Transferred models carry their pretraining's biases, and clinical reviewers ask first how a
model does per sex, age band, view and site. :func:`subgroup_report` splits the evaluation set
by each field in :data:`SUBGROUP_FIELDS` (``manufacturer`` stands in for site), computes the
per-finding AUROC of every subgroup with :func:`medvl.eval.metrics.classification_metrics`
(scikit-learn), and reports each subgroup's ``n``, positives and negatives per finding.

A finding is scored in a subgroup only when it has at least ``min_positives`` positives and as
many negatives there; otherwise its AUROC is ``None`` and its status says why (never 0). A
subgroup's ``gap`` is the whole set's macro AUROC over the findings scored in that subgroup
minus the subgroup's macro AUROC (positive: the subgroup does worse); ``worst`` is the
subgroup with the largest gap. Values missing from the header count as ``unknown``.
:func:`retrieval_subgroups` does the same for image-to-report recall (``medvl evaluate``).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.records import ImageRecord
from medvl.eval.metrics import (
    UncertainPolicy,
    as_numpy,
    binary_labels,
    classification_metrics,
    retrieval_metrics,
)

SUBGROUP_FIELDS = {
    "sex": "sex",
    "age_band": "age_band",
    "view": "view_position",
    "manufacturer": "manufacturer",
}
UNKNOWN = "unknown"
CSV_COLUMNS = (
    "field", "value", "finding", "n", "positives", "negatives", "auroc", "gap", "status",
)  # fmt: skip


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """``fields`` if every one is a known subgroup field, else a ``ValueError`` naming it."""
    unknown = [f for f in fields if f not in SUBGROUP_FIELDS]
    if unknown:
        raise ValueError(f"subgroup field {unknown[0]!r} is not one of {list(SUBGROUP_FIELDS)}")
    return tuple(fields)


def subgroup_values(records: Sequence[ImageRecord], fields: Sequence[str]) -> dict[str, list[str]]:
    """Each field's value for every record, in order (``unknown`` where the header had none)."""
    return {
        name: [str(getattr(r, SUBGROUP_FIELDS[name], "") or UNKNOWN) for r in records]
        for name in check_fields(fields)
    }


def _group_rows(
    probs: np.ndarray, y: np.ndarray, findings: Sequence[str], min_positives: int
) -> tuple[dict[str, Any], dict[str, float]]:
    metrics = classification_metrics(probs, y, findings, uncertain="ignore")["per_finding"]
    per, scored = {}, {}
    for j, name in enumerate(findings):
        known = y[~np.isnan(y[:, j]), j]
        positives, negatives = int(known.sum()), int(known.size - known.sum())
        if positives < min_positives:
            status = "too few positives"
        elif negatives < min_positives:
            status = "too few negatives"
        else:
            status = "ok"
            scored[name] = metrics[name]["auroc"]
        per[name] = {
            "positives": positives,
            "negatives": negatives,
            "auroc": scored.get(name),
            "status": status,
        }
    return per, scored


def subgroup_report(
    probs: Any,
    labels: Any,
    findings: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    uncertain: UncertainPolicy = "ignore",
    min_positives: int = 5,
) -> dict[str, Any]:
    """Per-subgroup AUROC with counts, each subgroup's gap to the whole, and the worst one.

    Parameters
    ----------
    probs, labels
        ``(N, F)`` probabilities and CheXpert codes (NaN unknown), as for
        :func:`~medvl.eval.metrics.classification_metrics`.
    groups
        Field name -> one value per row (:func:`subgroup_values`).
    min_positives
        Fewest positives (and negatives) a finding needs in a subgroup to get an AUROC.
    """
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1, got {min_positives}")
    p = as_numpy(probs)
    y = binary_labels(labels, uncertain)
    _, overall = _group_rows(p, y, findings, min_positives)
    out_groups = []
    for field, values in groups.items():
        column = np.asarray(values, dtype=object)
        if column.shape[0] != p.shape[0]:
            raise ValueError(f"subgroup {field}: {column.shape[0]} values for {p.shape[0]} rows")
        for value in sorted(set(values)):
            rows = column == value
            per, scored = _group_rows(p[rows], y[rows], findings, min_positives)
            common = [f for f in scored if f in overall]
            macro = float(np.mean([scored[f] for f in common])) if common else None
            whole = float(np.mean([overall[f] for f in common])) if common else None
            out_groups.append(
                {
                    "field": field,
                    "value": value,
                    "n": int(rows.sum()),
                    "per_finding": per,
                    "macro_auroc": macro,
                    "whole_macro_auroc": whole,
                    "gap": None if macro is None else whole - macro,
                    "status": "ok" if common else "too few positives",
                }
            )
    scored_groups = [g for g in out_groups if g["gap"] is not None]
    worst = max(scored_groups, key=lambda g: g["gap"], default=None)
    return {
        "fields": list(groups),
        "min_positives": min_positives,
        "whole": {
            "n": int(p.shape[0]),
            "macro_auroc": float(np.mean(list(overall.values()))) if overall else None,
        },
        "groups": out_groups,
        "worst": None
        if worst is None
        else {k: worst[k] for k in ("field", "value", "n", "macro_auroc", "gap")},
    }


def retrieval_subgroups(
    similarity: Any,
    study_ids: Sequence[str],
    text_study_ids: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    min_images: int = 5,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Image-to-report recall@k per subgroup (against every report) and its gap to the whole.

    ``gap`` is the whole set's R@1 minus the subgroup's; subgroups of fewer than
    ``min_images`` images are listed with status ``too few images`` and no recall.
    """
    s = as_numpy(similarity)
    ids = np.asarray(list(study_ids), dtype=object)

    def recall(rows: np.ndarray) -> dict[str, Any]:
        found = retrieval_metrics(s[rows], list(ids[rows]), text_study_ids, ks)
        return found["image_to_text"]

    whole = recall(np.ones(len(ids), dtype=bool))
    out_groups = []
    for field, values in groups.items():
        column = np.asarray(values, dtype=object)
        for value in sorted(set(values)):
            rows = column == value
            row: dict[str, Any] = {"field": field, "value": value, "n": int(rows.sum())}
            if rows.sum() < min_images:
                row.update({"status": "too few images", "image_to_text": None, "gap": None})
            else:
                found = recall(rows)
                row.update(
                    {"status": "ok", "image_to_text": found, "gap": whole["R@1"] - found["R@1"]}
                )
            out_groups.append(row)
    scored = [g for g in out_groups if g["gap"] is not None]
    worst = max(scored, key=lambda g: g["gap"], default=None)
    return {
        "fields": list(groups),
        "min_images": min_images,
        "whole": {"n": len(ids), "image_to_text": whole},
        "groups": out_groups,
        "worst": None if worst is None else {k: worst[k] for k in ("field", "value", "n", "gap")},
    }


def write_retrieval_subgroup_csv(report: Mapping[str, Any], path: str | Path) -> Path:
    """One row per subgroup: n, recall@k, median rank, gap in R@1, status."""
    path = Path(path)
    ks = [k for k in report["whole"]["image_to_text"] if k.startswith("R@")]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["field", "value", "n", *ks, "median_rank", "gap", "status"])
        for group in report["groups"]:
            found = group["image_to_text"] or {}
            scores = [f"{found[k]:.6f}" if k in found else "" for k in ks]
            median = found.get("median_rank", "")
            gap = "" if group["gap"] is None else f"{group['gap']:.6f}"
            head = [group["field"], group["value"], group["n"]]
            writer.writerow([*head, *scores, median, gap, group["status"]])
    return path


def write_subgroup_csv(report: Mapping[str, Any], path: str | Path) -> Path:
    """One row per subgroup and finding, plus a ``macro`` row per subgroup."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for group in report["groups"]:
            head = [group["field"], group["value"]]
            for name, row in group["per_finding"].items():
                auroc = "" if row["auroc"] is None else f"{row['auroc']:.6f}"
                counts = [group["n"], row["positives"], row["negatives"]]
                writer.writerow([*head, name, *counts, auroc, "", row["status"]])
            macro = "" if group["macro_auroc"] is None else f"{group['macro_auroc']:.6f}"
            gap = "" if group["gap"] is None else f"{group['gap']:.6f}"
            writer.writerow([*head, "macro", group["n"], "", "", macro, gap, group["status"]])
    return path


def stratify(
    probs: Any,
    labels: Any,
    findings: Sequence[str],
    records: Sequence[ImageRecord],
    fields: Sequence[str],
    csv_path: str | Path | None,
    min_positives: int = 5,
    uncertain: UncertainPolicy = "ignore",
) -> dict[str, Any]:
    """:func:`subgroup_report` over the ``records`` of the rows, also written as ``csv_path``."""
    groups = subgroup_values(records, fields)
    report = subgroup_report(probs, labels, findings, groups, uncertain, min_positives)
    if csv_path is not None:
        write_subgroup_csv(report, csv_path)
    return report
