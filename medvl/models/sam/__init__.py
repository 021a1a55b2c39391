"""SAM for segmentation: a segment-anything model with a frozen, cached encoder.

:mod:`.model` builds and persists it (:func:`build_sam`, :func:`create_sam`,
``save_pretrained``); :mod:`.config` holds its settings, :mod:`.decoder` the batched
one-prompt-per-image decoder, :mod:`.geometry` the resize/pad frame, :mod:`.prompts` the box
and point simulation, :mod:`.loss` Dice + BCE + IoU-MSE, :mod:`.cache` and :mod:`.sources` the
embedding cache, :mod:`.features` the prepared samples over it, :mod:`.predict` inference.
Importing this package pulls in segment-anything.
"""

from medvl.models.sam.config import SAM_VARIANTS, SamConfig, SamOutput, SamProvenance
from medvl.models.sam.model import SamModel, build_sam, create_sam, read_saved_config

__all__ = [
    "SAM_VARIANTS",
    "SamConfig",
    "SamModel",
    "SamOutput",
    "SamProvenance",
    "build_sam",
    "create_sam",
    "read_saved_config",
]
