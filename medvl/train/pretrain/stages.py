"""Configuration of one domain-adaptive pretraining stage (``mlm``, ``image_ssl``, ``contrastive``).

A pretraining job (:mod:`medvl.train.pretrain.job`) chains stages; each stage trains the aligner
it receives with its own engine settings and hands it on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from medvl.data.pairs import PairDataConfig
from medvl.train.engine import EngineConfig


@dataclass
class StageConfig:
    """One stage. ``mlm`` reads ``corpus``; ``contrastive`` reads ``data`` (pairs);
    ``image_ssl`` reads images only: ``data.manifest``'s (outside ``exclude_splits``) and/or
    the DICOM files below ``image_folder``."""

    kind: Literal["mlm", "image_ssl", "contrastive"] = "mlm"
    name: str = ""  # folder name of the stage; default: the kind
    # mlm
    corpus: str = "iu"  # "iu" (3,955 real IU reports), a folder of .txt, or a manifest
    exclude_splits: tuple[str, ...] = ("test",)  # studies never seen in pretraining
    val_fraction: float = 0.05  # held-out reports (mlm) or images (image_ssl) for the loss
    mlm_probability: float = 0.15
    # image_ssl: self-supervised pretraining of the image tower (medvl.models.ssl)
    method: Literal["mae", "simclr"] = "simclr"  # mae: the vit_tiny tower; simclr: any (CNNs)
    image_folder: Path | None = None  # DICOM files without reports, ingested into the stage
    mask_ratio: float = 0.75  # mae: share of patches hidden from the encoder
    temperature: float = 0.2  # simclr: NT-Xent temperature
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
        if self.kind not in ("mlm", "image_ssl", "contrastive"):
            raise ValueError(f"stage kind must be mlm, image_ssl or contrastive, got {self.kind!r}")
        self.name = self.name or self.kind
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        if self.semantic_weight < 0:
            raise ValueError(f"semantic_weight must be >= 0, got {self.semantic_weight}")
        if self.kind == "image_ssl" and self.data.manifest is None and self.image_folder is None:
            raise ValueError(
                "stage image_ssl needs images: data.manifest (its images) or image_folder "
                "(a DICOM folder)"
            )
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def finish_stage(
    result: Any, stage: StageConfig, trained: nn.Module, evaluate: Callable[[], dict | None]
) -> dict[str, Any]:
    """The record every stage ends with: its last (or, with ``load_best``, best) evaluation.

    With ``stage.load_best`` and a best checkpoint, ``trained`` gets the best weights back and
    ``evaluate()`` scores them again; otherwise ``after`` is the last evaluation of the run.
    """
    from medvl.train.engine.checkpoint import load_model_weights

    after = {k: v for k, v in result.evals[-1].items() if k != "step"} if result.evals else {}
    if stage.load_best and result.best_checkpoint is not None:
        load_model_weights(trained, result.best_checkpoint)
        after = evaluate() or {}
    return {
        "after": after,
        "steps": result.step,
        "final_loss": result.final_loss,
        "best_step": result.best_step,
        "wall_time_s": result.wall_time_s,
    }
