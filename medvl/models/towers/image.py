"""Image towers: grayscale radiographs in, pooled and local features out.

Every tower takes ``pixels`` of shape ``(B, 1, H, W)``, float in ``[0, 1]`` (the display-space
output of the DICOM pipeline), normalises them itself and returns

- ``encode(pixels) -> (B, C)``: one pooled vector per image (what the aligner projects), and
- ``features(pixels) -> (B, R, C)``: one vector per image region or patch (for local losses).

Architectures (``ImageTowerConfig.arch``):

``tiny``
    A four-stage GroupNorm CNN (~0.3 M parameters) for tests and CPU demos.
``vit_b16``
    ``transformers.ViTModel`` (patch 16, 768 wide, 12 layers) built from a ``ViTConfig``; a
    local ViT directory in ``pretrained`` replaces the random init. Pooled = CLS token.
``resnet50`` / ``densenet121``
    torchvision backbones; ``pretrained`` is a local ``.safetensors`` file or a state-dict
    checkpoint read with ``torch.load(weights_only=True)``.
``hf``
    Any ``transformers`` vision ``AutoModel`` directory (or hub name where there is network).

One channel, no copies: when 3-channel weights are loaded, the first convolution's RGB kernels
are summed into one input channel (:mod:`medvl.models.towers.grayscale`), exact for a gray image
with one shared normalisation: the mean of the source's per-channel statistics (ImageNet's unless
the source says otherwise).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from medvl.models.hub import load_state_dict_file, sha256_of
from medvl.models.towers.checkpointing import checkpoint_kwargs, enable_hf_checkpointing
from medvl.models.towers.grayscale import convert_to_grayscale, sum_rgb_kernel

logger = logging.getLogger(__name__)

IMAGE_ARCHS = ("tiny", "vit_b16", "resnet50", "densenet121", "hf")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_INIT_MEAN, RANDOM_INIT_STD = 0.5, 0.25


@dataclass
class ImageTowerConfig:
    """How to build an image tower.

    ``mean``/``std`` of ``None`` are resolved when the tower is built (from the pretrained
    source, else ImageNet's for loaded weights, else 0.5/0.25) and written back, so a saved model
    always records the normalisation it was trained with. ``gradient_checkpointing`` trades
    compute for activation memory (``checkpoint_policy``: ``full`` or ``selective``, see
    :func:`medvl.models.towers.checkpointing.checkpoint_kwargs`;
    ``checkpoint_every_n_layers`` for ViTs).
    """

    arch: str = "tiny"
    pretrained: str | None = None
    image_size: int = 224
    mean: float | None = None
    std: float | None = None
    gradient_checkpointing: bool = False
    checkpoint_every_n_layers: int = 1
    checkpoint_policy: Literal["full", "selective"] = "full"
    attn_implementation: str = "sdpa"
    tiny_widths: tuple[int, ...] = (16, 32, 64, 128)

    def __post_init__(self) -> None:
        if self.arch not in IMAGE_ARCHS:
            raise ValueError(f"image arch {self.arch!r} is not one of {list(IMAGE_ARCHS)}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")
        if self.std is not None and self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.arch == "hf" and not self.pretrained:
            raise ValueError("arch 'hf' needs pretrained: a transformers model directory")


class ImageTower(nn.Module):
    """Base class: input checks, resizing and normalisation shared by all image towers."""

    out_dim: int

    def __init__(self, config: ImageTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.source_sha256: str | None = None
        self._warned_resize = False

    def prepare(self, pixels: Tensor) -> Tensor:
        """Check ``(B, 1, H, W)``, resize to ``image_size`` if needed and normalise."""
        if pixels.dim() != 4 or pixels.shape[1] != 1:
            raise ValueError(
                f"image tower expects grayscale pixels of shape (B, 1, H, W), got "
                f"{tuple(pixels.shape)}"
            )
        size = self.config.image_size
        if pixels.shape[-2:] != (size, size):
            if not self._warned_resize:
                logger.warning(
                    "image tower resizes %s inputs to %dx%d; resize in the data pipeline to "
                    "avoid the extra work",
                    tuple(pixels.shape[-2:]),
                    size,
                    size,
                )
                self._warned_resize = True
            pixels = F.interpolate(
                pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        return (pixels - self.config.mean) / self.config.std

    def forward_both(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(pooled (B, C), local (B, R, C))`` in one pass."""
        raise NotImplementedError

    def encode(self, pixels: Tensor) -> Tensor:
        """Pooled image features ``(B, C)``."""
        return self.forward_both(pixels)[0]

    def features(self, pixels: Tensor) -> Tensor:
        """Local (region or patch) features ``(B, R, C)``."""
        return self.forward_both(pixels)[1]

    def forward(self, pixels: Tensor) -> Tensor:
        return self.encode(pixels)

    def hf_config_dict(self) -> dict[str, Any] | None:
        """The transformers config needed to rebuild this tower without its weights, if any."""
        return None


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    groups = min(8, c_out)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups, c_out),
        nn.GELU(),
    )


class TinyConvTower(ImageTower):
    """Four stride-2 stages of two 3x3 convs (GroupNorm, so results do not depend on batch)."""

    def __init__(self, config: ImageTowerConfig) -> None:
        super().__init__(config)
        stages, c_in = [], 1
        for width in config.tiny_widths:
            stages.append(nn.Sequential(_conv_block(c_in, width, 2), _conv_block(width, width, 1)))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.out_dim = c_in

    def forward_both(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        x = self.prepare(pixels)
        for stage in self.stages:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(stage, x, **checkpoint_kwargs(self.config.checkpoint_policy))
            else:
                x = stage(x)
        local = x.flatten(2).transpose(1, 2)
        return local.mean(dim=1), local


class HFVisionTower(ImageTower):
    """A transformers vision model (ViT by default); pooled = CLS token or mean of the grid."""

    def __init__(self, config: ImageTowerConfig, model: nn.Module) -> None:
        super().__init__(config)
        self.model = model
        hf = model.config
        self.out_dim = int(getattr(hf, "hidden_size", 0) or hf.hidden_sizes[-1])
        if config.gradient_checkpointing:
            enable_hf_checkpointing(
                model, config.checkpoint_every_n_layers, config.checkpoint_policy
            )

    def forward_both(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        x = self.prepare(pixels)
        hidden = self.model(pixel_values=x).last_hidden_state
        if hidden.dim() == 4:
            local = hidden.flatten(2).transpose(1, 2)
            return local.mean(dim=1), local
        return hidden[:, 0], hidden[:, 1:]

    def hf_config_dict(self) -> dict[str, Any]:
        return self.model.config.to_dict()


class TorchvisionTower(ImageTower):
    """torchvision ResNet-50 or DenseNet-121 without its classifier; pooled = global mean."""

    def __init__(self, config: ImageTowerConfig) -> None:
        super().__init__(config)
        import torchvision

        if config.arch == "resnet50":
            net = torchvision.models.resnet50(weights=None)
            self.out_dim = net.fc.in_features
        else:
            net = torchvision.models.densenet121(
                weights=None, memory_efficient=config.gradient_checkpointing
            )
            self.out_dim = net.classifier.in_features
        convert_to_grayscale(net)
        if config.arch == "resnet50":
            net.fc = nn.Identity()
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            self.blocks = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        else:
            self.stem = nn.Identity()
            self.blocks = nn.ModuleList([nn.Sequential(net.features, nn.ReLU())])

    def forward_both(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        x = self.stem(self.prepare(pixels))
        checkpointed = (
            self.config.arch == "resnet50"
            and self.config.gradient_checkpointing
            and self.training
            and torch.is_grad_enabled()
        )
        for block in self.blocks:
            if checkpointed:
                x = checkpoint(block, x, **checkpoint_kwargs(self.config.checkpoint_policy))
            else:
                x = block(x)
        local = x.flatten(2).transpose(1, 2)
        return local.mean(dim=1), local

    def load_backbone_weights(self, path: str) -> None:
        """Load a torchvision state dict (classifier keys ignored, RGB stem folded to gray)."""
        state = load_state_dict_file(path)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
        if self.config.arch == "resnet50":
            renamed = {}
            for key, value in state.items():
                head, _, rest = key.partition(".")
                if head in ("conv1", "bn1"):
                    renamed[f"stem.{0 if head == 'conv1' else 1}.{rest}"] = value
                elif head.startswith("layer") and head[5:].isdigit():
                    renamed[f"blocks.{int(head[5:]) - 1}.{rest}"] = value
                else:
                    renamed[key] = value
            first = "stem.0.weight"
        else:
            renamed = {"blocks.0.0." + k.removeprefix("features."): v for k, v in state.items()}
            first = "blocks.0.0.conv0.weight"
        if first in renamed:
            renamed[first] = sum_rgb_kernel(renamed[first])
        result = self.load_state_dict(renamed, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{path}: not a {self.config.arch} checkpoint; missing "
                f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )


def _vit_b16_config(config: ImageTowerConfig) -> Any:
    from transformers import ViTConfig

    return ViTConfig(
        image_size=config.image_size,
        patch_size=16,
        num_channels=1,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        attn_implementation=config.attn_implementation,
    )


def _source_stats(path: str | None) -> tuple[float, float] | None:
    """Mean of per-channel ``image_mean``/``image_std`` from a transformers preprocessor file."""
    if path is None:
        return None
    file = Path(path) / "preprocessor_config.json"
    if not file.is_file():
        return None
    data = json.loads(file.read_text())
    mean, std = data.get("image_mean"), data.get("image_std")
    if not mean or not std:
        return None
    return float(sum(mean) / len(mean)), float(sum(std) / len(std))


def _build_hf_model(
    config: ImageTowerConfig, hf_config: dict[str, Any] | None, source: str | None
) -> nn.Module:
    from transformers import AutoConfig, AutoModel, ViTModel

    if hf_config is not None:
        cfg = AutoConfig.for_model(**hf_config)
        cfg.num_channels = 1
        kwargs = {"add_pooling_layer": False} if cfg.model_type == "vit" else {}
        return _with_attn(AutoModel.from_config, cfg, config.attn_implementation, **kwargs)
    if source is None:
        return ViTModel(_vit_b16_config(config), add_pooling_layer=False)
    cfg = AutoConfig.from_pretrained(source)
    kwargs = {"add_pooling_layer": False} if cfg.model_type == "vit" else {}
    model = _with_attn(AutoModel.from_pretrained, source, config.attn_implementation, **kwargs)
    convert_to_grayscale(model)
    return model


def _with_attn(factory: Any, source: Any, attn: str, **kwargs: Any) -> nn.Module:
    """Call a transformers factory asking for ``attn``; fall back to the default if unsupported."""
    try:
        return factory(source, attn_implementation=attn, **kwargs)
    except (ValueError, ImportError) as err:
        logger.warning("attention %r unavailable for this model (%s); using the default", attn, err)
        return factory(source, **kwargs)


def build_image_tower(
    config: ImageTowerConfig, hf_config: dict[str, Any] | None = None, load_weights: bool = True
) -> ImageTower:
    """Build the image tower ``config`` describes.

    Parameters
    ----------
    config
        Tower settings; ``mean``/``std`` are filled in if unset.
    hf_config
        A saved transformers config: rebuild that architecture instead of reading it from
        ``pretrained``.
    load_weights
        Read ``pretrained``; ``False`` builds the architecture with random weights (used by
        ``MedVLAligner.from_pretrained``, which loads its own weights afterwards).
    """
    if not load_weights and config.arch == "hf" and hf_config is None:
        raise ValueError("arch 'hf' without weights needs its saved transformers config")
    source = config.pretrained if load_weights else None
    loaded = False
    if config.arch == "tiny":
        tower: ImageTower = TinyConvTower(config)
    elif config.arch in ("vit_b16", "hf"):
        model = _build_hf_model(config, hf_config, source)
        tower = HFVisionTower(config, model)
        loaded = hf_config is None and source is not None
    else:
        tower = TorchvisionTower(config)
        if source is not None:
            tower.load_backbone_weights(source)
            loaded = True
    if loaded:
        tower.source_sha256 = sha256_of(source)
    if config.mean is None or config.std is None:
        stats = _source_stats(source) if loaded else None
        if stats is None and loaded:
            stats = (sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3)
        mean, std = stats or (RANDOM_INIT_MEAN, RANDOM_INIT_STD)
        config.mean = mean if config.mean is None else config.mean
        config.std = std if config.std is None else config.std
    return tower
