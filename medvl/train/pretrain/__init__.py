"""Domain-adaptive pretraining: chained stages (``mlm``, ``image_ssl``, ``contrastive``).

:mod:`.job` runs the job (:func:`pretrain`), :mod:`.stages` configures a stage, :mod:`.mlm`,
:mod:`.image_ssl` and :mod:`.contrastive` train one stage each.
"""

from medvl.train.pretrain.job import PretrainConfig, pretrain, stage_dir
from medvl.train.pretrain.stages import StageConfig

__all__ = ["PretrainConfig", "StageConfig", "pretrain", "stage_dir"]
