"""Contrastive image-report alignment on in-domain pairs (a pretraining stage).

InfoNCE (:class:`~medvl.models.losses.ContrastiveLoss`) on each batch of pairs, plus, with
``semantic_weight > 0``, MedCLIP's semantic matching loss on the same batch's finding labels
(so two normal studies in one batch are not pushed apart). Negatives span the global batch
under DDP (the losses gather with gradients). Validation reports retrieval R@k and zero-shot
macro AUROC on the ``eval_split`` pairs; the logit scale is clamped after every step.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from medvl.models.aligner import MedVLAligner
from medvl.models.losses import ContrastiveLoss, SemanticMatchingLoss
from medvl.models.zeroshot import PromptBank
from medvl.train.alignment_eval import alignment_metrics
from medvl.train.pair_data import load_pairs, pair_dataset, stack_images
from medvl.train.run_types import EngineConfig
from medvl.train.stages import StageConfig

logger = logging.getLogger(__name__)


def contrastive_loss_fn(semantic_weight: float = 0.0) -> Any:
    """Engine loss: InfoNCE (+ ``semantic_weight`` x semantic matching) on a pair batch."""
    infonce = ContrastiveLoss()
    semantic = SemanticMatchingLoss()

    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        image, text, scale = out["image_embeds"], out["text_embeds"], out["logit_scale"]
        loss = infonce(image, text, scale)
        logs = {"infonce": loss.detach(), "logit_scale": scale.detach()}
        if semantic_weight:
            labels = batch["labels"]
            matching = semantic(image, text, scale, labels, labels, paired=True)
            logs["semantic"] = matching.detach()
            loss = loss + semantic_weight * matching
        return loss, logs

    return loss_fn


def clamp_logit_scale(model: nn.Module) -> None:
    """``after_step`` hook: keep the temperature inside the aligner's clamp."""
    model.clamp_logit_scale_()


def run_contrastive_stage(
    aligner: MedVLAligner, stage: StageConfig, train: EngineConfig
) -> dict[str, Any]:
    """Align ``aligner`` on the stage's pairs; returns validation numbers before and after."""
    from medvl.train.checkpoint import load_model_weights
    from medvl.train.engine import Engine

    size = aligner.config.image.image_size
    tokenizer, max_length = aligner.tokenizer, aligner.text_tower.max_length
    train_set = pair_dataset(
        load_pairs(stage.data, "train"), stage.data, size, tokenizer, max_length, train=True
    )
    val_data = stack_images(
        pair_dataset(load_pairs(stage.data, stage.eval_split), stage.data, size)
    )
    prompts = PromptBank.from_yaml(stage.prompts)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return alignment_metrics(model, val_data, prompts, stage.eval_findings)

    engine = Engine(train)
    aligner.to(engine.device)
    before = evaluate(aligner)
    loader = engine.make_loader(train_set, collate_fn=train_set.collate, drop_last=True)
    logger.info(
        "contrastive alignment on %d pairs, validation on %d", len(train_set), len(val_data["text"])
    )
    result = engine.fit(
        aligner,
        loader,
        contrastive_loss_fn(stage.semantic_weight),
        evaluate,
        after_step=clamp_logit_scale,
    )
    after = {k: v for k, v in result.evals[-1].items() if k != "step"} if result.evals else {}
    if stage.load_best and result.best_checkpoint is not None:
        load_model_weights(aligner, result.best_checkpoint)
        after = evaluate(aligner)
    return {
        "pairs_train": len(train_set),
        "pairs_val": len(val_data["text"]),
        "before": before,
        "after": after,
        "steps": result.step,
        "final_loss": result.final_loss,
        "best_step": result.best_step,
        "wall_time_s": result.wall_time_s,
    }
