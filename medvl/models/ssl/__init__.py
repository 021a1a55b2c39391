"""Self-supervised objectives for image towers, trained before image-report alignment.

:mod:`.mae` holds :class:`MaskedAutoencoder` (MAE for the timm ViT tower), :mod:`.simclr`
:class:`SimCLR` (two augmented views, NT-Xent, for any tower, meant for the CNNs). Both wrap
the tower they train, sharing it rather than copying it, and return the loss from ``forward``
so the engine (and DDP) drive them like any model; their heads are thrown away afterwards.
:func:`ssl_objective` builds the one a pretraining stage names.
"""

from medvl.models.ssl.mae import MaskedAutoencoder
from medvl.models.ssl.objective import ssl_objective
from medvl.models.ssl.simclr import SimCLR

__all__ = ["MaskedAutoencoder", "SimCLR", "ssl_objective"]
