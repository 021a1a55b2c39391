"""The working parts of :func:`medvl.train.finetune.job.finetune`: build, train, evaluate.

Saving and loading the result belong to the classifier (``FindingsClassifier.save_pretrained``
and ``load_classifier`` in :mod:`medvl.models.classifier`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl.data.pairs import load_pairs, pair_dataset, stack_images
from medvl.eval.alignment import label_columns
from medvl.models.classifier import (
    FindingsClassifier,
    few_shot_indices,
    image_tower_blocks,
    masked_bce,
    zero_shot_linear_head,
)
from medvl.models.lora import apply_lora, count_parameters
from medvl.models.zeroshot import PromptBank, embed_images
from medvl.train.engine import EngineConfig
from medvl.train.engine.param_groups import (
    FreezeSchedule,
    ModelBlocks,
    default_param_groups,
    discriminative_param_groups,
)

logger = logging.getLogger(__name__)


def build_classifier(aligner: nn.Module, prompts: PromptBank, config: Any) -> FindingsClassifier:
    """A findings classifier whose trainable parameters are those of ``config.mode``."""
    kind = "context" if config.mode == "prompt_learning" else config.head.kind
    model = FindingsClassifier(aligner, prompts, kind, context_init=config.head.context_init)
    for p in aligner.parameters():
        p.requires_grad_(False)
    if config.mode == "projection":  # both towers frozen; the head follows the projections
        for p in model.head.parameters():
            p.requires_grad_(False)
        for p in projection_parameters(aligner):
            p.requires_grad_(True)
    elif config.mode == "lora":
        model.aligner = apply_lora(aligner, config.lora)
    elif config.mode in ("partial", "full"):
        trainable = [aligner.image_tower, aligner.image_projection]
        if config.head.kind == "prompt" and config.mode == "full":
            trainable += [aligner.text_tower, aligner.text_projection]
        for module in trainable:
            for p in module.parameters():
                p.requires_grad_(True)
    return model


def projection_parameters(aligner: nn.Module) -> list[nn.Parameter]:
    """What mode ``projection`` trains: both projections, the temperature (and SigLIP bias)."""
    params = [*aligner.image_projection.parameters(), *aligner.text_projection.parameters()]
    params.append(aligner.log_logit_scale)
    if aligner.logit_bias is not None:
        params.append(aligner.logit_bias)
    return params


def lora_param_groups(
    model: FindingsClassifier, engine_cfg: EngineConfig, head_lr: float
) -> list[dict[str, Any]]:
    """The head at ``head_lr`` (0 = ``train.lr``) and everything else trainable at ``train.lr``.

    The zero-shot head's weights are ``logit_scale`` times prompt differences, so at the
    adapters' learning rate it hardly moves; few-shot gains need it to learn faster.
    """
    lr, decay = engine_cfg.lr, engine_cfg.weight_decay
    groups = default_param_groups(model.head, head_lr or lr, decay)
    if any(p.requires_grad for p in model.aligner.parameters()):
        groups += default_param_groups(model.aligner, lr, decay)
    return groups


def trainable_start(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters as they start (the zero-shot model, for WiSE-FT)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def interpolate_to_start(model: nn.Module, start: dict[str, torch.Tensor], alpha: float) -> None:
    """WiSE-FT (Wortsman et al., 2022): every trained tensor becomes ``start + alpha x change``.

    The weight-space ensemble of the zero-shot start and the fine-tuned model: with a few
    labelled studies per finding, fine-tuning gains on the findings they teach and loses on
    those whose zero-shot prior was better; the midpoint keeps most of both. LoRA's ``A``
    matrices are left as trained: ``B`` starts at zero, so scaling ``B`` alone scales the
    merged update ``B A`` by exactly ``alpha``.
    """
    for name, param in model.named_parameters():
        if name in start and ".lora_A." not in name:
            param.copy_(start[name] + alpha * (param - start[name]))


def refresh_zero_shot_head(model: FindingsClassifier) -> None:
    """Mode ``projection``: rebuild a linear head as the zero-shot head of the new projections."""
    if model.kind != "linear":  # prompt heads embed the prompts on every call already
        return
    device = next(model.head.parameters()).device
    head = zero_shot_linear_head(model.aligner, model.prompts).to(device)
    for p in head.parameters():
        p.requires_grad_(False)
    model.head = head


def _projection_fit(
    model: FindingsClassifier, pairs: list, config: Any, engine: Any, size: int, val: Any
) -> Any:
    """Contrastive training of the projections and temperature on image-report pairs."""
    from medvl.models.losses import ContrastiveLoss

    aligner = model.aligner
    tower = aligner.text_tower
    dataset = pair_dataset(
        pairs, config.data, size, tower.batch_tokenizer(), tower.max_length, train=True
    )
    contrastive = ContrastiveLoss(gather_distributed=False)

    def loss_fn(m: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        out = m(batch["image"], batch["input_ids"], batch["attention_mask"])
        return contrastive(out["image_embeds"], out["text_embeds"], out["logit_scale"]), {}

    def eval_fn(_: nn.Module) -> dict[str, float] | None:
        refresh_zero_shot_head(model)
        return _val_auroc(model, val)

    loader = engine.make_loader(
        dataset, collate_fn=dataset.collate, drop_last=len(dataset) > engine.config.batch_size
    )
    groups = default_param_groups(aligner, engine.config.lr, engine.config.weight_decay)
    return engine.fit(
        aligner, loader, loss_fn, eval_fn, param_groups=groups,
        after_step=lambda m: m.clamp_logit_scale_(), on_device=dataset.on_device,
    )  # fmt: skip


def load_split(config: Any, split: str, image_size: int) -> dict[str, Any]:
    """Stacked images, labels, texts, study ids and image ``records`` of ``split``."""
    dataset = pair_dataset(load_pairs(config.data, split), config.data, image_size)
    return {**stack_images(dataset), "records": [pair.image for pair in dataset.pairs]}


@torch.no_grad()
def predict_proba(
    model: FindingsClassifier, images: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """Sigmoid probabilities ``(N, F)`` in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [
        model.predict_proba(images[i : i + batch_size].to(device))
        for i in range(0, images.shape[0], batch_size)
    ]
    model.train(was_training)
    return torch.cat(out)


def evaluate_classifier(
    model: FindingsClassifier,
    data: dict[str, Any],
    roc_png: Path | None = None,
    subgroups: Sequence[str] = (),
    min_positives: int = 5,
    subgroups_csv: Path | None = None,
) -> dict:
    """Per-finding and macro AUROC (uncertain labels left out, the usual evaluation).

    ``roc_png`` also draws the per-finding ROC curves there; ``subgroups`` (header fields of
    ``data["records"]``) adds a ``subgroups`` section (:func:`medvl.eval.subgroups.stratify`),
    also written to ``subgroups_csv``.
    """
    from medvl.eval.metrics import classification_metrics
    from medvl.eval.plots import roc_curves_png
    from medvl.eval.subgroups import stratify

    probs = predict_proba(model, data["image"])
    labels = label_columns(data["labels"], model.findings)
    if roc_png is not None:
        roc_curves_png(probs, labels, model.findings, roc_png, title=f"ROC: {roc_png.parent.name}")
    metrics = classification_metrics(probs, labels, model.findings, uncertain="ignore")
    if subgroups:
        metrics["subgroups"] = stratify(
            probs, labels, model.findings, data["records"], subgroups, subgroups_csv, min_positives
        )
    return metrics


def _val_auroc(model: FindingsClassifier, val: dict[str, Any] | None) -> dict[str, float] | None:
    if val is None:
        return None
    macro = evaluate_classifier(model, val)["macro"]["auroc"]
    return {"val_auroc": float("nan") if macro is None else macro}


def train(model: FindingsClassifier, config: Any, engine_cfg: EngineConfig, size: int) -> dict:
    """Train ``model`` as ``config.mode`` says; returns counts and timings."""
    from medvl.data.datasets import label_vector
    from medvl.train.engine import Engine
    from medvl.train.engine.checkpoint import load_model_weights

    aligner = model.aligner
    pairs = load_pairs(config.data, config.train_split)
    if config.few_shot.k:
        labels = torch.stack([label_vector(p.labels, model.findings) for p in pairs])
        keep = few_shot_indices(
            labels, [p.study_id for p in pairs], config.few_shot.k, config.few_shot.seed
        )
        pairs = [pairs[i] for i in keep]
        logger.info("few-shot k=%d: %d training studies", config.few_shot.k, len(pairs))
    val = load_split(config, config.val_split, size) if config.val_split else None
    findings, uncertain = model.findings, config.head.uncertain
    engine = Engine(engine_cfg)
    model.to(engine.device)
    start = trainable_start(model) if config.wise_alpha < 1 else {}

    if config.mode == "projection":
        trained = aligner
        result = _projection_fit(model, pairs, config, engine, size, val)
    elif config.mode == "linear_probe":
        data = stack_images(pair_dataset(pairs, config.data, size))
        embeds = embed_images(aligner, data["image"]).cpu()
        dataset = torch.utils.data.TensorDataset(embeds, label_columns(data["labels"], findings))

        def probe_loss(head: nn.Module, batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
            return masked_bce(head(batch[0]), batch[1], uncertain), {}

        trained: nn.Module = model.head
        loader = engine.make_loader(dataset)
        result = engine.fit(trained, loader, probe_loss, lambda _: _val_auroc(model, val))
    else:
        dataset = pair_dataset(pairs, config.data, size, train=True)
        trained = model

        def loss_fn(m: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
            return masked_bce(
                m(batch["image"]), label_columns(batch["labels"], findings), uncertain
            ), {}

        groups, freeze = None, None
        if config.mode in ("partial", "full"):
            blocks = ModelBlocks.from_modules(
                model,
                head=[model.head, aligner.image_projection],
                blocks=image_tower_blocks(aligner.image_tower),
            )
            groups = discriminative_param_groups(
                blocks, engine_cfg.lr, config.layer_decay, engine_cfg.weight_decay
            )
            if config.mode == "partial":
                freeze = FreezeSchedule(blocks, config.freeze)
        else:
            groups = lora_param_groups(model, engine_cfg, config.head_lr)
        loader = engine.make_loader(
            dataset, collate_fn=dataset.collate, drop_last=len(dataset) > engine_cfg.batch_size
        )
        result = engine.fit(
            model, loader, loss_fn, lambda m: _val_auroc(m, val), param_groups=groups,
            freeze=freeze, on_device=dataset.on_device,
        )  # fmt: skip
    if result.best_checkpoint is not None:
        load_model_weights(trained, result.best_checkpoint)
    if start:
        interpolate_to_start(model, start, config.wise_alpha)
    if config.mode == "projection":
        refresh_zero_shot_head(model)
    return {
        "trainable_parameters": result.trainable_parameters,
        "total_parameters": count_parameters(model)[1],
        "train_examples": len(pairs),
        "steps": result.step,
        "first_loss": result.losses[0][1] if result.losses else None,
        "final_loss": result.final_loss,
        "best_step": result.best_step,
        "best_val_auroc": result.best_value,
        "train_wall_time_s": result.wall_time_s,
    }
