"""Masked-language-model pretraining of the aligner's text tower on radiology reports.

Domain-adaptive pretraining (Gururangan et al., 2020): a general-domain encoder such as
all-MiniLM-L6-v2 keeps learning its own objective, masked-token prediction, on in-domain text
before it is aligned with images. The text tower's transformers model gets the MLM head of
its family (``AutoModelForMaskedLM`` built from the same config, decoder tied to the input
embeddings) and transformers' ``DataCollatorForLanguageModeling`` does the 80/10/10 masking.
The encoder is shared, not copied, so training updates the aligner in place; the head is
thrown away afterwards.

The corpus comes from :func:`medvl.data.report_corpus.load_report_corpus` (the IU reports, a
folder of ``.txt`` reports or a manifest); the head from :mod:`medvl.models.mlm_head`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from medvl.data.report_corpus import TokenizedReports, load_report_corpus, split_corpus
from medvl.models.aligner import MedVLAligner
from medvl.models.mlm_head import build_mlm_model
from medvl.train.engine import EngineConfig
from medvl.train.pretrain.stages import StageConfig, finish_stage

logger = logging.getLogger(__name__)


def mlm_collator(tokenizer: Any, mlm_probability: float) -> Any:
    """transformers' masking collator (80% [MASK], 10% random token, 10% unchanged)."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)


def mlm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Engine loss function: masked-token cross-entropy of a :class:`MaskedLM`."""
    return model(batch["input_ids"], batch["attention_mask"], batch["labels"]), {}


@torch.no_grad()
def heldout_mlm_loss(
    mlm: nn.Module, loader: DataLoader, seed: int = 0, max_batches: int | None = None
) -> float:
    """Mean masked-token loss on ``loader`` with masks drawn from ``seed``.

    The global RNG is forked, so evaluation neither disturbs nor depends on training's random
    stream and the same masks are scored before and after training.
    """
    device = next(mlm.parameters()).device
    total, tokens = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"] != -100).sum())
            if n == 0:
                continue
            loss = mlm(batch["input_ids"], batch["attention_mask"], batch["labels"])
            total += float(loss) * n
            tokens += n
    if tokens == 0:
        raise ValueError("no masked tokens in the held-out reports (corpus too small?)")
    return total / tokens


def run_mlm_stage(aligner: MedVLAligner, stage: StageConfig, train: EngineConfig) -> dict[str, Any]:
    """Continue MLM pretraining of ``aligner``'s text tower; returns the stage's numbers.

    The held-out loss is measured on the same masked reports before and after training.
    """
    from medvl.train.engine import Engine

    texts = load_report_corpus(stage.corpus, stage.exclude_splits)
    train_texts, val_texts = split_corpus(texts, stage.val_fraction)
    tokenizer = aligner.tokenizer
    max_length = aligner.text_tower.max_length
    train_set = TokenizedReports(train_texts, tokenizer, max_length)
    val_set = TokenizedReports(val_texts, tokenizer, max_length)
    collate = mlm_collator(tokenizer, stage.mlm_probability)
    mlm = build_mlm_model(aligner.text_tower.model)
    engine = Engine(train)
    mlm.to(engine.device)
    val_loader = DataLoader(val_set, batch_size=train.batch_size, collate_fn=collate)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"mlm_loss": heldout_mlm_loss(model, val_loader, seed=train.seed)}

    before = evaluate(mlm) if len(val_set) else {}
    loader = engine.make_loader(train_set, collate_fn=collate, drop_last=True)
    logger.info("MLM on %d reports (%d held out)", len(train_set), len(val_set))
    result = engine.fit(mlm, loader, mlm_loss, evaluate if len(val_set) else None)
    return {
        "reports_train": len(train_set),
        "reports_val": len(val_set),
        "before": before,
        **finish_stage(result, stage, mlm, lambda: evaluate(mlm)),
    }
