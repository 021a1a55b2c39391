"""Fine-tuning an aligner for findings: zero-shot, linear probe, LoRA, partial or full.

``medvl finetune --config configs/lora_findings.yaml [key=value ...]`` runs :func:`finetune`.
One key, ``mode``, picks what trains (the head always starts as the zero-shot classifier,
see :mod:`medvl.models.classifier`):

``zero_shot``     nothing; the prompts alone are evaluated.
``linear_probe``  the head, on image embeddings computed once by the frozen aligner.
``projection``    both towers frozen; the two projections and the temperature train on the
                  training pairs with the contrastive loss, and a linear head is the
                  zero-shot head of the new projections (nothing trains on labels).
``prompt_learning`` CoOp: learned context vectors before each finding's name through the
                  frozen text tower (``head.context_init`` seeds them), with a scale and bias
                  per finding; every aligner weight stays fixed.
``lora``          peft LoRA adapters on the configured towers, plus the head.
``partial``       the head, then the top image-tower blocks (``freeze``: two-stage by
                  default, or progressive), with layer-wise decaying learning rates.
``full``          every image-side parameter (and the text side with the prompt head).

Labels are multi-label BCE targets over ``head.findings`` with unmentioned labels masked
and uncertain ones handled by ``head.uncertain`` (ignore / positive / negative). Few-shot:
``few_shot.k > 0`` trains on k positive and k negative studies per finding (deterministic).
``output_dir`` is the job's one output key: it holds the resolved ``config.yaml``, the engine
run (``train/``; the job sets the engine's folder, so ``train.output_dir`` is refused), the
saved classifier (``config.json`` + ``head.safetensors``, and ``adapter/`` for LoRA or
``model/`` for projection, partial and full: :func:`medvl.models.classifier.load_classifier`
reads it)
and ``metrics.json`` (macro and per-finding AUROC on ``eval_split``, trainable parameters,
wall time); with ``subgroups`` (header fields) also ``subgroups.csv`` and
``metrics.subgroups`` (:mod:`medvl.eval.subgroups`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medvl.config import save_config
from medvl.data.pairs import PairDataConfig
from medvl.eval.subgroups import check_fields
from medvl.models.classifier import MODES, FinetuneMode
from medvl.models.lora import LoraConfig
from medvl.train.engine import EngineConfig, FreezeConfig
from medvl.train.engine.config import refuse_output_dir

logger = logging.getLogger(__name__)


@dataclass
class HeadConfig:
    """The findings head and its labels."""

    kind: Literal["linear", "prompt"] = "linear"  # mode prompt_learning: its context head
    context_init: str = "a chest x-ray showing"  # mode prompt_learning: the context's start
    findings: tuple[str, ...] = ()  # () = every finding of the prompt file
    prompts: Path | None = None  # prompt YAML; None = the packaged CheXpert-14 prompts
    uncertain: Literal["ignore", "positive", "negative"] = "ignore"


@dataclass
class FewShotConfig:
    """``k`` positive and ``k`` negative training studies per finding; 0 = all training data."""

    k: int = 0
    seed: int = 0


@dataclass
class FinetuneConfig:
    """A fine-tuning job."""

    model: str = "runs/dapt/model"  # saved aligner directory (or preset, for experiments)
    mode: FinetuneMode = "lora"
    output_dir: Path = Path("runs/finetune")
    data: PairDataConfig = field(default_factory=PairDataConfig)
    train_split: str = "train"
    val_split: str = "val"  # for best checkpoint / early stopping ("" = none)
    eval_split: str = "test"  # reported in metrics.json
    head: HeadConfig = field(default_factory=HeadConfig)
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    freeze: FreezeConfig = field(
        default_factory=lambda: FreezeConfig("two_stage", head_steps=100, top_blocks=2)
    )
    layer_decay: float = 0.5  # partial/full: LR of a block = lr * layer_decay ** depth
    head_lr: float = 0.0  # lora/prompt_learning: the head's LR; 0 = train.lr
    wise_alpha: float = 1.0  # WiSE-FT: keep start + alpha x (trained - start); 1 = as trained
    subgroups: tuple[str, ...] = ()  # header fields to stratify eval_split by (subgroups.csv)
    subgroup_min_positives: int = 5
    train: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")
        if self.few_shot.k < 0:
            raise ValueError(f"few_shot.k must be >= 0, got {self.few_shot.k}")
        if not 0.0 <= self.wise_alpha <= 1.0:
            raise ValueError(
                f"wise_alpha must be in [0, 1] (1 = as trained), got {self.wise_alpha}"
            )
        if self.head_lr < 0:
            raise ValueError(f"head_lr must be >= 0 (0 = train.lr), got {self.head_lr}")
        refuse_output_dir(self.train, "train", "<output_dir>/train")
        check_fields(self.subgroups)


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Run one fine-tuning job; returns (and writes) its ``metrics.json`` content."""
    import torch

    from medvl.data.processes import process_state
    from medvl.eval.metrics import nan_to_none
    from medvl.models.aligner import create_aligner
    from medvl.models.zeroshot import PromptBank
    from medvl.train.finetune.steps import build_classifier, evaluate_classifier, load_split, train

    started = time.perf_counter()
    state = process_state(config.train.cpu)  # one group under torchrun / accelerate launch
    main = state.is_main_process
    out = config.output_dir
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    torch.manual_seed(config.train.seed)
    prompts = PromptBank.from_yaml(config.head.prompts)
    if config.head.findings:
        prompts = prompts.subset(config.head.findings)
    aligner = create_aligner(config.model)
    model = build_classifier(aligner, prompts, config)
    size = aligner.config.image.image_size
    test = load_split(config, config.eval_split, size)
    result: dict[str, Any] = {
        "mode": config.mode,
        "model": config.model,
        "few_shot_k": config.few_shot.k,
    }
    if config.mode != "zero_shot":
        engine_cfg = dataclasses.replace(config.train, output_dir=out / "train")
        result.update(train(model, config, engine_cfg, size))
    else:
        result["trainable_parameters"] = 0
        result["train_examples"] = 0
    metrics = evaluate_classifier(
        model, test, roc_png=out / "roc.png" if main else None, subgroups=config.subgroups,
        min_positives=config.subgroup_min_positives,
        subgroups_csv=out / "subgroups.csv" if main else None,
    )  # fmt: skip
    result["eval_split"] = config.eval_split
    result["macro_auroc"] = metrics["macro"]["auroc"]
    result["metrics"] = metrics
    result["wall_time_s"] = time.perf_counter() - started
    if main:
        model.save_pretrained(out, base=config.model, mode=config.mode)
        (out / "metrics.json").write_text(json.dumps(nan_to_none(result), indent=2))
    state.wait_for_everyone()
    logger.info(
        "%s: macro AUROC %.4f on %s (%s trainable parameters)",
        config.mode,
        result["macro_auroc"] or float("nan"),
        config.eval_split,
        f"{result['trainable_parameters']:,}",
    )
    return result
