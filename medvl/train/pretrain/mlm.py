"""Masked-language-model pretraining of the aligner's text tower on radiology reports.

Domain-adaptive pretraining (Gururangan et al., 2020): a general-domain encoder such as
all-MiniLM-L6-v2 keeps learning its own objective, masked-token prediction, on in-domain text
before it is aligned with images. The text tower's transformers model gets the MLM head of
its family (``AutoModelForMaskedLM`` built from the same config, decoder tied to the input
embeddings) and transformers' ``DataCollatorForLanguageModeling`` does the 80/10/10 masking.
The encoder is shared, not copied, so training updates the aligner in place; the head is
thrown away afterwards.

Corpora (:func:`load_report_corpus`): ``"iu"`` = the 3,955 real Indiana University reports
shipped with torchxrayvision; a folder of ``.txt`` reports (one report per file); or a
manifest of Study or ImageReportPair records. Texts go through
:func:`medvl.io.reports.clean_model_text`, the same cleaning the aligner sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medvl.io.reports import clean_model_text
from medvl.models.aligner import MedVLAligner
from medvl.train.engine import EngineConfig
from medvl.train.pretrain.stages import StageConfig

logger = logging.getLogger(__name__)


def _manifest_texts(path: Path, exclude_splits: Sequence[str]) -> list[str]:
    """Report texts of a Study or ImageReportPair manifest, one per study."""
    from medvl.data.records import ImageReportPair, Study, read_manifest

    first = next((line for line in path.read_text().splitlines() if line.strip()), "")
    if not first:
        raise ValueError(f"{path}: manifest is empty")
    cls: type = Study if "report_text" in json.loads(first) else ImageReportPair
    texts: dict[str, str] = {}
    for record in read_manifest(path, cls):
        if record.split in exclude_splits:
            continue
        text = record.model_text if isinstance(record, Study) else record.text
        texts.setdefault(record.study_id, text)
    return list(texts.values())


def load_report_corpus(source: str | Path = "iu", exclude_splits: Sequence[str] = ()) -> list[str]:
    """Cleaned report texts for MLM from ``"iu"``, a folder of ``.txt`` files or a manifest.

    ``exclude_splits`` drops studies of those splits (e.g. ``("test",)``, so a held-out test
    set's reports are never seen in pretraining); folders of text files have no splits.
    """
    if str(source) == "iu":
        from medvl.data.sources.iu.xray import load_iu_studies

        raw = [s.model_text for s in load_iu_studies() if s.split not in exclude_splits]
    else:
        path = Path(source)
        if path.is_dir():
            files = sorted(path.rglob("*.txt"))
            if not files:
                raise FileNotFoundError(f"{path}: no .txt reports in this folder")
            raw = [f.read_text(errors="replace") for f in files]
        elif path.is_file():
            raw = _manifest_texts(path, exclude_splits)
        else:
            raise FileNotFoundError(
                f"{path}: report corpus not found (expected 'iu', a folder or a manifest)"
            )
    texts = [t for t in (clean_model_text(r) for r in raw) if t]
    if not texts:
        raise ValueError(f"report corpus {source}: no non-empty report text")
    return texts


def split_corpus(texts: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split by a hash of each text (stable across runs)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    train, val = [], []
    for text in texts:
        bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (val if bucket < val_fraction else train).append(text)
    return train, val


class TokenizedReports(Dataset):
    """Reports tokenized once (truncated to ``max_length``); items are ``{"input_ids": [...]}``."""

    def __init__(self, texts: Sequence[str], tokenizer: Any, max_length: int) -> None:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.input_ids: list[list[int]] = encoded["input_ids"]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids[i]}


class MaskedLM(nn.Module):
    """An encoder with its family's MLM head, scoring only the masked positions.

    transformers' ``*ForMaskedLM`` computes vocabulary logits for every token, although only
    the ~15% masked ones enter the loss; with a 30k vocabulary that projection dominates the
    step. When the head is a single module (BERT's ``cls``, RoBERTa's ``lm_head``) this
    wrapper gathers the masked positions first and runs the head on those alone: the same
    loss, several times cheaper. Other families fall back to the full forward.
    """

    def __init__(self, mlm: nn.Module) -> None:
        super().__init__()
        self.mlm = mlm
        prefix = mlm.base_model_prefix
        heads = [m for name, m in mlm.named_children() if name != prefix]
        self.encoder = getattr(mlm, prefix)
        self.head = heads[0] if len(heads) == 1 else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy over the masked tokens (``labels != -100``)."""
        if self.head is None:
            return self.mlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        masked = labels != -100
        if not bool(masked.any()):  # nothing to predict: a zero loss that keeps the graph
            return hidden.sum() * 0.0
        logits = self.head(hidden[masked])
        return nn.functional.cross_entropy(logits.float(), labels[masked])


def build_mlm_model(text_model: nn.Module) -> MaskedLM:
    """A :class:`MaskedLM` of ``text_model``'s family whose encoder *is* ``text_model``.

    The head comes from ``AutoModelForMaskedLM`` built on the same config; its decoder is
    tied to the encoder's input embeddings and the rest starts from the config's
    initialisation (sentence-transformers checkpoints ship no MLM head).
    """
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_config(text_model.config)
    prefix = mlm.base_model_prefix
    if not isinstance(getattr(mlm, prefix, None), type(text_model)):
        raise TypeError(
            f"{type(mlm).__name__}.{prefix} is not a {type(text_model).__name__}; "
            "this text tower family has no compatible masked-LM head"
        )
    setattr(mlm, prefix, text_model)
    mlm.tie_weights()
    return MaskedLM(mlm)


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
    from medvl.train.engine.checkpoint import load_model_weights

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
    after = {k: v for k, v in result.evals[-1].items() if k != "step"} if result.evals else {}
    if stage.load_best and result.best_checkpoint is not None:
        load_model_weights(mlm, result.best_checkpoint)
        after = evaluate(mlm)
    return {
        "reports_train": len(train_set),
        "reports_val": len(val_set),
        "before": before,
        "after": after,
        "steps": result.step,
        "final_loss": result.final_loss,
        "wall_time_s": result.wall_time_s,
    }
