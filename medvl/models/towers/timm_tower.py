"""Image towers from timm: any ``timm.create_model`` name, optionally with a checkpoint file.

The model is built by timm without its classifier; pooled = timm's pre-logits features
(``forward_head(pre_logits=True)``), local = ``forward_features`` as a token grid. The
checkpoint is a timm state dict read weights-only (``{"state_dict": ...}``, ``{"model": ...}``
and DDP ``module.`` keys unwrapped; classifier keys dropped) and loaded strictly. The
per-channel mean/std come from timm's data config for the model and are folded into its
first convolution (:class:`~medvl.models.towers.grayscale.GrayInputConv`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from medvl.models.hub import load_state_dict_file, sha256_of
from medvl.models.towers.grayscale import fold_gray_input
from medvl.models.towers.image import ImageTower, ImageTowerConfig


def timm_data_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """(mean, std, input side) of timm's data config for ``model``."""
    from timm.data import resolve_data_config

    data = resolve_data_config({}, model=model)
    return tuple(data["mean"]), tuple(data["std"]), int(data["input_size"][-1])


def _timm_state(path: str, model: nn.Module) -> dict[str, Tensor]:
    state = {k.removeprefix("module."): v for k, v in load_state_dict_file(path).items()}
    classifier = model.default_cfg.get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return {k: v for k, v in state.items() if not k.startswith(tuple(f"{h}." for h in heads))}


class TimmTower(ImageTower):
    """A timm backbone on gray input (see the module docstring)."""

    def __init__(self, config: ImageTowerConfig, load_weights: bool = True) -> None:
        import timm

        super().__init__(config)
        if not config.timm_model:
            raise ValueError("arch 'timm' needs timm_model: a timm.create_model name")
        try:
            model = timm.create_model(config.timm_model, pretrained=False, num_classes=0)
        except RuntimeError as err:
            raise ValueError(f"timm_model {config.timm_model!r}: {err}") from None
        if load_weights and config.pretrained:
            result = model.load_state_dict(_timm_state(config.pretrained, model), strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(
                    f"{config.pretrained}: not a {config.timm_model} checkpoint; missing "
                    f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
                )
            self.source_sha256 = sha256_of(config.pretrained)
        if config.channel_mean is None:
            mean, std, _ = timm_data_stats(model)
            config.channel_mean, config.channel_std = mean, std
            config.mean, config.std = 0.0, 1.0
        fold_gray_input(model, config.channel_mean, config.channel_std)
        self.model = model
        self.out_dim = int(model.num_features)

    def forward_both(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        features = self.model.forward_features(self.prepare(pixels))
        pooled = self.model.forward_head(features, pre_logits=True)
        local = features.flatten(2).transpose(1, 2) if features.dim() == 4 else features
        return pooled, local

    def hf_config_dict(self) -> dict[str, Any] | None:
        return None
