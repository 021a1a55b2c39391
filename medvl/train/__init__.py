"""Training: one Accelerate-based engine and the jobs built on it (pretrain, finetune, segment).

Import the engine pieces from here; the jobs live in their own modules (``medvl.train.pretrain``,
``medvl.train.finetune``) and are imported on demand because they pull in transformers.
"""

from medvl.train.engine import Engine, EvalFn, LossFn
from medvl.train.param_groups import (
    FreezeConfig,
    FreezeSchedule,
    ModelBlocks,
    default_param_groups,
    discriminative_param_groups,
)
from medvl.train.run_types import EngineConfig, NonFiniteLossError, TrainResult

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
