"""Configuration of one domain-adaptive pretraining stage (``mlm`` or ``contrastive``).

A pretraining job (:mod:`medvl.train.pretrain.job`) chains stages; each stage trains the aligner
it receives with its own engine settings and hands it on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medvl.data.pairs import PairDataConfig
from medvl.train.engine import EngineConfig


@dataclass
class StageConfig:
    """One stage. ``mlm`` reads ``corpus``; ``contrastive`` reads ``data`` (pairs)."""

    kind: Literal["mlm", "contrastive"] = "mlm"
    name: str = ""  # folder name of the stage; default: the kind
    # mlm
    corpus: str = "iu"  # "iu" (3,955 real IU reports), a folder of .txt, or a manifest
    exclude_splits: tuple[str, ...] = ("test",)  # studies never seen in pretraining
    val_fraction: float = 0.05  # held-out reports for the MLM loss
    mlm_probability: float = 0.15
    # contrastive
    data: PairDataConfig = field(default_factory=PairDataConfig)
    semantic_weight: float = 0.0  # weight of the semantic matching loss next to InfoNCE
    loss: Literal["auto", "infonce", "sigmoid"] = "auto"  # auto: sigmoid for SigLIP models
    text_tower: Literal["train", "locked"] = "train"  # locked: frozen, reports encoded once
    prompts: Path | None = None  # prompt YAML for zero-shot validation; None = packaged
    eval_findings: tuple[str, ...] = ()  # findings scored in validation; () = all prompted
    eval_split: str = "val"
    load_best: bool = True  # end the stage on the best validation checkpoint
    train: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        if self.kind not in ("mlm", "contrastive"):
            raise ValueError(f"stage kind must be mlm or contrastive, got {self.kind!r}")
        self.name = self.name or self.kind
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        if self.semantic_weight < 0:
            raise ValueError(f"semantic_weight must be >= 0, got {self.semantic_weight}")
