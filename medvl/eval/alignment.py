"""How well an aligner aligns: retrieval and zero-shot findings on a held-out set of pairs.

Used as the ``eval_fn`` of contrastive training (best checkpoint and early stopping on
``zeroshot_auroc`` or a recall), before/after numbers of pretraining stages, and the
fine-tuning comparison. Retrieval groups by study: an image's relevant reports are those of
its own study, and each study's report is a candidate once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from medvl.eval.metrics import classification_metrics, retrieval_metrics
from medvl.findings import CHEXPERT_14
from medvl.models.aligner import MedVLAligner
from medvl.models.zeroshot import PromptBank, ZeroShotClassifier, embed_images, embed_texts


def label_columns(labels: torch.Tensor, findings: Sequence[str]) -> torch.Tensor:
    """The columns of a CheXpert-14-ordered label matrix for ``findings``, in that order.

    Datasets store labels in CheXpert-14 order; prompt banks and heads may name a subset in
    their own order. A finding outside CheXpert-14 has no column: a clear error, not a guess.
    """
    missing = [f for f in findings if f not in CHEXPERT_14]
    if missing:
        raise ValueError(f"findings {missing} are not CheXpert-14 labels of the manifest")
    index = [CHEXPERT_14.index(f) for f in findings]
    return labels[:, index]


def retrieval_summary(
    aligner: MedVLAligner, data: dict[str, Any], ks=(1, 5, 10)
) -> dict[str, float]:
    """Image->report and report->image R@k, median rank and chance R@k on ``data``."""
    image_embeds = embed_images(aligner, data["image"])
    first: dict[str, str] = {}
    for study, text in zip(data["study_id"], data["text"], strict=True):
        first.setdefault(study, text)
    text_embeds = embed_texts(aligner, list(first.values()))
    similarity = image_embeds @ text_embeds.T
    result = retrieval_metrics(similarity.cpu(), data["study_id"], list(first), ks=ks)
    out: dict[str, float] = {}
    for direction, short in (("image_to_text", "i2t"), ("text_to_image", "t2i")):
        block = result[direction]
        for k in ks:
            out[f"{short}_R@{k}"] = float(block[f"R@{k}"])
        out[f"{short}_median_rank"] = float(block["median_rank"])
    out["chance_R@5"] = float(result["image_to_text"]["chance"]["R@5"])
    return out


def zeroshot_summary(
    aligner: MedVLAligner,
    data: dict[str, Any],
    prompts: PromptBank,
    findings: Sequence[str],
) -> dict[str, float]:
    """Zero-shot macro AUROC over ``findings`` (those with both classes) and per finding."""
    classifier = ZeroShotClassifier(aligner, prompts.subset(findings))
    probs = classifier.predict_proba(data["image"])
    metrics = classification_metrics(probs, label_columns(data["labels"], findings), findings)
    out = {"zeroshot_auroc": metrics["macro"]["auroc"] or float("nan")}
    for name, row in metrics["per_finding"].items():
        if row["auroc"] is not None:
            out[f"auroc/{name}"] = row["auroc"]
    return out


def alignment_metrics(
    aligner: MedVLAligner,
    data: dict[str, Any],
    prompts: PromptBank | None = None,
    findings: Sequence[str] = (),
) -> dict[str, float]:
    """Retrieval and zero-shot numbers of ``aligner`` on stacked pairs (``stack_images``).

    ``findings`` defaults to every finding of the prompt bank.
    """
    prompts = prompts or PromptBank.from_yaml()
    findings = tuple(findings) or prompts.findings
    return {
        **retrieval_summary(aligner, data),
        **zeroshot_summary(aligner, data, prompts, findings),
    }
