"""PNG plots for evaluation reports: ROC curves, similarity heatmaps, retrieval examples.

Figures are drawn on matplotlib's object API with the Agg canvas (no pyplot state, no display
needed), so plotting is safe in batch jobs and threads.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medvl.eval.metrics import UncertainPolicy, as_numpy, binary_labels
from medvl.io.deid import scrub_report_text


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def roc_curves_png(
    probs: Any,
    labels: Any,
    findings: Sequence[str],
    path: str | Path,
    uncertain: UncertainPolicy = "ignore",
    title: str = "Zero-shot ROC per finding",
) -> Path:
    """One ROC curve per finding (AUROC in the legend); single-class findings are listed apart."""
    from sklearn.metrics import roc_auc_score, roc_curve

    p, y = as_numpy(probs), binary_labels(labels, uncertain)
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    skipped = []
    colors = [f"C{i % 10}" for i in range(len(findings))]
    styles = ["-", "--", ":", "-."]
    for j, name in enumerate(findings):
        keep = ~np.isnan(y[:, j])
        yj, pj = y[keep, j], p[keep, j]
        if yj.size == 0 or yj.min() == yj.max():
            skipped.append(name)
            continue
        fpr, tpr, _ = roc_curve(yj, pj)
        auc = roc_auc_score(yj, pj)
        ax.plot(
            fpr,
            tpr,
            color=colors[j],
            linestyle=styles[(j // 10) % len(styles)],
            linewidth=1.4,
            label=f"{name} ({auc:.2f}, n+={int(yj.sum())})",
        )
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    if skipped:
        note = "one class only (no ROC): " + ", ".join(skipped)
        fig.text(0.01, -0.02, textwrap.fill(note, 110), fontsize=7, va="top")
    return _save(fig, path)


def similarity_heatmap_png(
    similarity: Any,
    path: str | Path,
    row_names: Sequence[str] | None = None,
    col_names: Sequence[str] | None = None,
    max_items: int = 32,
    title: str = "Image-report cosine similarity",
) -> Path:
    """Heatmap of the top-left ``max_items`` square of an image x report similarity matrix.

    For a paired set (row i's report is column i) a good model shows a bright diagonal.
    """
    s = as_numpy(similarity)[:max_items, :max_items]
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    im = ax.imshow(s, cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    ax.set_xlabel("report")
    ax.set_ylabel("image")
    ax.set_title(title)
    for names, setter, ticks in (
        (row_names, ax.set_yticks, s.shape[0]),
        (col_names, ax.set_xticks, s.shape[1]),
    ):
        if names is not None:
            short = [str(n)[:18] for n in list(names)[:ticks]]
            setter(range(ticks), short, fontsize=6)
    if col_names is not None:
        for label in ax.get_xticklabels():
            label.set_rotation(90)
    return _save(fig, path)


def retrieval_examples_png(
    similarity: Any,
    images: Any,
    texts: Sequence[str],
    path: str | Path,
    image_groups: Sequence[Any] | None = None,
    text_groups: Sequence[Any] | None = None,
    k: int = 3,
    n_queries: int = 4,
) -> Path:
    """For the first ``n_queries`` images: the image and its top-``k`` reports.

    A retrieved report is marked correct (green) when its group equals the image's group
    (row i matches column i without groups); wrong ones are red. Report text is scrubbed of
    identifiers before it is drawn (:func:`medvl.io.deid.scrub_report_text`): pixels escape
    every text search, so nothing unscrubbed may reach them.
    """
    s = as_numpy(similarity)
    pixels = as_numpy(images)
    n_queries = min(n_queries, s.shape[0])
    k = min(k, s.shape[1])
    fig = Figure(figsize=(3 + 3.2 * k, 2.8 * n_queries))
    for q in range(n_queries):
        ax = fig.add_subplot(n_queries, k + 1, q * (k + 1) + 1)
        image = pixels[q]
        ax.imshow(image.reshape(image.shape[-2:]), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"query image {q}", fontsize=8)
        order = np.argsort(-s[q], kind="stable")[:k]
        for rank, col in enumerate(order, start=1):
            if image_groups is not None and text_groups is not None:
                correct = image_groups[q] == text_groups[col]
            else:
                correct = col == q
            tax = fig.add_subplot(n_queries, k + 1, q * (k + 1) + 1 + rank)
            tax.set_axis_off()
            snippet = textwrap.fill(scrub_report_text(str(texts[col]))[:260], 42)
            tax.text(
                0.0,
                1.0,
                f"#{rank}  sim {s[q, col]:.3f}\n{snippet}",
                va="top",
                ha="left",
                fontsize=7,
                color="darkgreen" if correct else "firebrick",
                transform=tax.transAxes,
            )
    fig.suptitle("Top reports retrieved per image (green = the image's own report)", fontsize=10)
    return _save(fig, path)
