"""Training: one Accelerate-based engine and the jobs built on it.

:mod:`medvl.train.engine` is the engine every training runs on; the jobs are
:mod:`medvl.train.pretrain` (DAPT stages), :mod:`medvl.train.finetune` (findings heads, LoRA,
partial and full fine-tuning) and :mod:`medvl.train.segment` (SAM decoder fine-tuning).
"""
