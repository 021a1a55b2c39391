"""The one training engine every job runs on (Accelerate underneath).

:mod:`.loop` holds :class:`Engine` (``fit``: mixed precision, accumulation, clipping, NaN
detection, evaluation and early stopping), :mod:`.config` its settings and result types,
:mod:`.checkpoint` and :mod:`.resume` atomic checkpoints and exact resume, :mod:`.schedule`
warmup + cosine, :mod:`.param_groups` discriminative learning rates and freezing schedules,
:mod:`.run_log` the JSONL/TensorBoard log.
"""

from medvl.train.engine.config import EngineConfig, NonFiniteLossError, TrainResult
from medvl.train.engine.loop import Engine, EvalFn, LossFn
from medvl.train.engine.param_groups import (
    FreezeConfig,
    FreezeSchedule,
    ModelBlocks,
    default_param_groups,
    discriminative_param_groups,
)

__all__ = [
    "Engine",
    "EngineConfig",
    "EvalFn",
    "FreezeConfig",
    "FreezeSchedule",
    "LossFn",
    "ModelBlocks",
    "NonFiniteLossError",
    "TrainResult",
    "default_param_groups",
    "discriminative_param_groups",
]
