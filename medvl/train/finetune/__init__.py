"""Fine-tuning an aligner for findings: zero-shot, linear probe, LoRA, partial or full.

:mod:`.job` holds the config and the job (:func:`finetune`); :mod:`.steps` builds, trains and
evaluates the classifier.
"""

from medvl.train.finetune.job import FewShotConfig, FinetuneConfig, HeadConfig, finetune

__all__ = ["FewShotConfig", "FinetuneConfig", "HeadConfig", "finetune"]
