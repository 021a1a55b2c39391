"""torchxrayvision DenseNet-121 image towers, with torchxrayvision's own normalisation.

torchxrayvision models take one channel scaled to [-1024, 1024] (``xrv.datasets.normalize``):
for display-space pixels ``g`` in [0, 1] that is ``(g - 0.5) / (1 / 2048)``, set here and
recorded with the model (never ImageNet's statistics). Weights come as torchxrayvision
ships them: a state dict (with its ``op_threshs`` operating points) or a whole pickled model,
read with ``torch.load(weights_only=True)`` and only torchxrayvision's and torch's layer
classes allowed, so no other code can run. Pooled = ``features2`` (1024 wide); the
18-pathology head stays available as a baseline (:meth:`XrvDenseNetTower.pathology_probs`).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medvl.models.hub import load_state_dict_file, sha256_of
from medvl.models.towers.image import ImageTower, ImageTowerConfig

XRV_MEAN, XRV_STD = 0.5, 1.0 / 2048.0


def _safe_classes() -> list[Any]:
    import torchxrayvision as xrv

    models = xrv.models
    return [
        models.DenseNet,
        models._DenseBlock,
        models._DenseLayer,
        models._Transition,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.Linear,
        nn.Sequential,
        nn.ModuleDict,
        collections.OrderedDict,
        set,
    ]


def read_xrv_weights(path: str | Path) -> dict[str, Tensor]:
    """A torchxrayvision DenseNet state dict from a state-dict file or a pickled model."""
    path = Path(path)
    try:
        return {k.removeprefix("module."): v for k, v in load_state_dict_file(path).items()}
    except ValueError:
        pass
    try:
        with torch.serialization.safe_globals(_safe_classes()):
            model = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError ...
        raise ValueError(
            f"{path}: neither a state dict nor a pickled torchxrayvision model ({err})"
        ) from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a torchxrayvision model")
    return dict(model.state_dict())


class XrvDenseNetTower(ImageTower):
    """torchxrayvision's DenseNet-121 on gray input in [0, 1]."""

    def __init__(self, config: ImageTowerConfig, load_weights: bool = True) -> None:
        import torchxrayvision as xrv

        if (config.mean, config.std) not in ((None, None), (XRV_MEAN, XRV_STD)):
            raise ValueError(
                f"mean {config.mean}/std {config.std}: torchxrayvision models expect "
                f"mean {XRV_MEAN}, std 1/2048 (their [-1024, 1024] input range)"
            )
        config.mean, config.std = XRV_MEAN, XRV_STD
        super().__init__(config)
        state = read_xrv_weights(config.pretrained) if load_weights and config.pretrained else {}
        if "op_threshs" in state:
            config.xrv_op_threshs = True
        thresholds = torch.full((18,), float("nan")) if config.xrv_op_threshs else None
        self.model = xrv.models.DenseNet(weights=None, op_threshs=thresholds)
        if state:
            result = self.model.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(
                    f"{config.pretrained}: not a torchxrayvision DenseNet; missing "
                    f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
                )
            self.source_sha256 = sha256_of(config.pretrained)
        self.pathologies = tuple(xrv.datasets.default_pathologies)
        self.out_dim = int(self.model.classifier.in_features)

    def forward_both(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        x = self.prepare(pixels)
        grid = torch.relu(self.model.features(x))
        local = grid.flatten(2).transpose(1, 2)
        return local.mean(dim=1), local

    def pathology_probs(self, pixels: Tensor) -> Tensor:
        """torchxrayvision's own 18 outputs ``(B, 18)`` in :attr:`pathologies` order (after
        its operating-point normalisation when the weights carry ``op_threshs``)."""
        return self.model(self.prepare(pixels))

    def hf_config_dict(self) -> None:
        return None
