"""Training: one Accelerate-based engine and the jobs built on it (pretrain, finetune, segment).

The engine pieces are re-exported here from :mod:`medvl.train.engine`; the jobs live in their
own modules (:mod:`medvl.train.pretrain`, :mod:`medvl.train.finetune`,
:mod:`medvl.train.segment`) and are imported on demand because they pull in transformers.
"""

from medvl.train.engine import (
    Engine,
    EngineConfig,
    EvalFn,
    FreezeConfig,
    FreezeSchedule,
    LossFn,
    ModelBlocks,
    NonFiniteLossError,
    TrainResult,
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
