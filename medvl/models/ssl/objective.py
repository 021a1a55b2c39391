"""Which self-supervised objective fits which image tower, and building it."""

from __future__ import annotations

from torch import nn

from medvl.models.ssl.mae import MaskedAutoencoder
from medvl.models.ssl.simclr import SimCLR
from medvl.models.towers.image import ImageTower
from medvl.models.towers.vit_tiny import TimmViTTower

METHODS = ("mae", "simclr")


def method_problem(method: str, tower: ImageTower) -> str | None:
    """Why ``method`` cannot pretrain ``tower`` (one sentence), or ``None`` when it can.

    MAE needs a patch-token ViT whose blocks can run on the visible tokens alone: the
    ``vit_tiny`` tower. SimCLR needs only pooled features, so it takes any tower (it is the
    method meant for the CNNs).
    """
    arch = tower.config.arch
    if method not in METHODS:
        return f"method {method!r} is not one of {list(METHODS)}"
    if method == "mae" and not isinstance(tower, TimmViTTower):
        return (
            f"method mae needs the ViT image tower (arch vit_tiny), but this model's image "
            f"tower is {arch!r}; use method: simclr for CNN towers"
        )
    return None


def ssl_objective(
    method: str, tower: ImageTower, mask_ratio: float = 0.75, temperature: float = 0.2
) -> nn.Module:
    """The :class:`MaskedAutoencoder` or :class:`SimCLR` module that trains ``tower``."""
    problem = method_problem(method, tower)
    if problem is not None:
        raise ValueError(problem)
    if method == "mae":
        assert isinstance(tower, TimmViTTower)
        return MaskedAutoencoder(tower, mask_ratio=mask_ratio)
    return SimCLR(tower, temperature=temperature)
