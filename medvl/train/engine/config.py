"""Types shared by the engine and its jobs: the run config, the result, the progress record.

:class:`EngineConfig` is the ``train`` section of every job config (pretrain, finetune, segment),
so YAML files and ``key=value`` overrides reach the engine unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN/inf; training stops instead of learning garbage."""

    def __init__(self, step: int, what: str, value: float, epoch: int, batch: int) -> None:
        self.step = step
        super().__init__(
            f"{what} is {value} at optimizer step {step} (epoch {epoch}, batch {batch}); "
            "lower the learning rate, check the inputs of that batch, or use bf16 instead of fp16"
        )


@dataclass
class EngineConfig:
    """Settings of one training run (a section of every job config).

    ``output_dir`` is where the run writes (checkpoints, ``metrics.jsonl``, TensorBoard). A job
    sets it from its own top-level ``output_dir`` (and refuses a user-set one); code that uses
    the engine alone passes it.
    """

    output_dir: Path | None = None
    max_steps: int = 0  # optimizer steps; 0 = run `epochs` full epochs
    epochs: int = 1
    batch_size: int = 32  # per process, per micro-batch (used by make_loader)
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    min_lr_ratio: float = 0.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    max_grad_norm: float = 1.0  # 0 disables clipping
    log_every: int = 10
    eval_every: int = 0  # steps; 0 = at the end of each epoch and of training
    eval_at_start: bool = False  # also evaluate the starting weights (step 0; they can be best)
    checkpoint_every: int = 0  # steps; the final step is always checkpointed
    keep_last: int = 2
    best_metric: str = ""  # eval key that picks checkpoints/best; "" = no best tracking
    best_mode: Literal["max", "min"] = "max"
    early_stopping_patience: int = 0  # evaluations without improvement; 0 = never stop early
    seed: int = 0
    resume: str = "auto"  # "auto" (newest checkpoint if any), "never", or a checkpoint path
    tensorboard: bool = True
    progress: bool = True
    find_unused_parameters: bool = False
    num_workers: int = 0
    cpu: bool = False  # force CPU even when a GPU is present

    def __post_init__(self) -> None:
        if self.output_dir is not None:
            self.output_dir = Path(self.output_dir)
        positive = {
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "keep_last": self.keep_last,
        }
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if self.max_steps < 0 or (self.max_steps == 0 and self.epochs < 1):
            raise ValueError("set max_steps > 0 or epochs >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")


def refuse_output_dir(train: EngineConfig, key: str, folder: str) -> None:
    """Jobs place their engine's run folder themselves; a user-set one is a config error.

    ``key`` is the section's config key (``train``, ``stages.mlm.train``), ``folder`` where the
    job puts the run, so the message says what to set instead.
    """
    if train.output_dir is not None:
        raise ValueError(f"{key}.output_dir is set by the job to {folder}; set output_dir instead")


@dataclass
class TrainResult:
    """What :meth:`Engine.fit` returns; the model itself is trained in place."""

    step: int
    epoch: int
    final_loss: float
    losses: list[tuple[int, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    best_value: float | None = None
    best_step: int | None = None
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    stopped_early: bool = False
    resumed_from: int = 0
    trainable_parameters: int = 0
    wall_time_s: float = 0.0


@dataclass
class TrainProgress:
    """Where a run stands; saved in every checkpoint's ``state.json``."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_value: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    eval_step: int = -1  # step of the latest evaluation (a rerun of a finished run skips it)
    stopped_early: bool = False
