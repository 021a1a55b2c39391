"""Learning-rate schedules: linear warmup, then cosine (or constant, or linear) decay.

The schedule is a callable object holding only plain numbers in ``__dict__``, so
``LambdaLR.state_dict()`` stores it and a resumed run continues on exactly the same curve.
The multiplier applies to every parameter group's own initial learning rate, which keeps
discriminative learning rates (head >> top blocks >> bottom blocks) in proportion throughout.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

ScheduleKind = Literal["cosine", "constant", "linear"]


class WarmupDecay:
    """LR multiplier for optimizer step ``step``: linear warmup, then the chosen decay.

    Parameters
    ----------
    kind
        ``"cosine"`` (half cosine to ``min_ratio``), ``"linear"`` (straight line to ``min_ratio``)
        or ``"constant"`` (stays at 1 after warmup).
    warmup_steps
        Steps of linear warmup from ``1 / (warmup_steps + 1)`` up to 1.
    total_steps
        Optimizer steps of the whole run; the decay reaches ``min_ratio`` at this step.
    min_ratio
        Floor of the multiplier at the end of the decay, as a fraction of the initial LR.
    """

    def __init__(
        self, kind: ScheduleKind, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
    ) -> None:
        if kind not in ("cosine", "constant", "linear"):
            raise ValueError(f"unknown schedule {kind!r}; expected cosine, constant or linear")
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(
                f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}"
            )
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_ratio}")
        self.kind = kind
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: ScheduleKind,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping once per optimizer step with :class:`WarmupDecay`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupDecay(kind, warmup_steps, total_steps, min_ratio)
    )
