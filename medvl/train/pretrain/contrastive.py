"""Contrastive image-report alignment on in-domain pairs (a pretraining stage).

InfoNCE (:class:`~medvl.models.losses.ContrastiveLoss`) or, for the SigLIP family (``loss:
auto`` picks it for a model with a logit bias), the sigmoid loss on each batch of pairs, plus, with
``semantic_weight > 0``, MedCLIP's semantic matching loss on the same batch's finding labels
(so two normal studies in one batch are not pushed apart). With ``text_tower: locked`` the
text tower is frozen and each report encoded once (:mod:`medvl.models.locked_text`).
Negatives span the global batch under DDP (the losses gather with gradients). Validation
reports retrieval R@k and zero-shot macro AUROC on the ``eval_split`` pairs; the logit scale
is clamped after every step.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from medvl.data.pairs import load_pairs, pair_dataset, stack_images
from medvl.eval.alignment import alignment_metrics
from medvl.models.aligner import MedVLAligner
from medvl.models.locked_text import LockedTextAligner
from medvl.models.losses import ContrastiveLoss, SemanticMatchingLoss, SigmoidLoss
from medvl.models.zeroshot import PromptBank
from medvl.train.engine import EngineConfig
from medvl.train.pretrain.stages import StageConfig, finish_stage

logger = logging.getLogger(__name__)


def _logit_bias(model: nn.Module) -> torch.Tensor:
    """The SigLIP logit bias of an aligner, however it is wrapped (DDP, locked text)."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "aligner", inner)
    if getattr(inner, "logit_bias", None) is None:
        raise ValueError("loss 'sigmoid' needs a model with a logit bias (the SigLIP family)")
    return inner.logit_bias


def contrastive_loss_fn(
    semantic_weight: float = 0.0, locked_text: bool = False, loss: str = "infonce"
) -> Any:
    """Engine loss: InfoNCE or SigLIP's sigmoid (+ ``semantic_weight`` x semantic matching).

    With ``locked_text`` the model is a :class:`LockedTextAligner` that takes the raw texts.
    """
    infonce = ContrastiveLoss()
    sigmoid = SigmoidLoss()
    semantic = SemanticMatchingLoss()

    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        if locked_text:
            out = model(batch["image"], batch["text"])
        else:
            out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        image, text, scale = out["image_embeds"], out["text_embeds"], out["logit_scale"]
        if loss == "sigmoid":
            value = sigmoid(image, text, scale, _logit_bias(model))
        else:
            value = infonce(image, text, scale)
        logs = {loss: value.detach(), "logit_scale": scale.detach()}
        if semantic_weight:
            labels = batch["labels"]
            matching = semantic(image, text, scale, labels, labels, paired=True)
            logs["semantic"] = matching.detach()
            value = value + semantic_weight * matching
        return value, logs

    return loss_fn


def stage_loss(stage: StageConfig, aligner: MedVLAligner) -> str:
    """``infonce`` or ``sigmoid``: the stage's choice, ``auto`` = the model family's own."""
    if stage.loss != "auto":
        return stage.loss
    return "sigmoid" if aligner.logit_bias is not None else "infonce"


def clamp_logit_scale(model: nn.Module) -> None:
    """``after_step`` hook: keep the temperature inside the aligner's clamp."""
    model.clamp_logit_scale_()


def run_contrastive_stage(
    aligner: MedVLAligner, stage: StageConfig, train: EngineConfig
) -> dict[str, Any]:
    """Align ``aligner`` on the stage's pairs; returns validation numbers before and after."""
    from medvl.train.engine import Engine

    size = aligner.config.image.image_size
    locked = stage.text_tower == "locked"
    tokenizer = None if locked else aligner.text_tower.batch_tokenizer()
    train_pairs = load_pairs(stage.data, "train")
    train_set = pair_dataset(
        train_pairs, stage.data, size, tokenizer, aligner.text_tower.max_length, train=True
    )
    val_data = stack_images(
        pair_dataset(load_pairs(stage.data, stage.eval_split), stage.data, size)
    )
    prompts = PromptBank.from_yaml(stage.prompts)

    def evaluate(model: nn.Module) -> dict[str, float]:
        inner = model.aligner if isinstance(model, LockedTextAligner) else model
        return alignment_metrics(inner, val_data, prompts, stage.eval_findings)

    engine = Engine(train)
    aligner.to(engine.device)
    before = evaluate(aligner)
    model: nn.Module = (
        LockedTextAligner(aligner, [p.text for p in train_pairs]) if locked else aligner
    )
    loader = engine.make_loader(train_set, collate_fn=train_set.collate, drop_last=True)
    logger.info(
        "contrastive alignment on %d pairs, validation on %d", len(train_set), len(val_data["text"])
    )
    result = engine.fit(
        model,
        loader,
        contrastive_loss_fn(stage.semantic_weight, locked, stage_loss(stage, aligner)),
        evaluate,
        after_step=clamp_logit_scale,
        on_device=train_set.on_device,
    )
    return {
        "pairs_train": len(train_set),
        "pairs_val": len(val_data["text"]),
        "before": before,
        **finish_stage(result, stage, model, lambda: evaluate(aligner)),
    }
