"""Image towers: grayscale radiographs in, pooled and local features out.

Every tower takes ``pixels`` of shape ``(B, 1, H, W)``, float in ``[0, 1]`` (the display-space
output of the DICOM pipeline), normalises them itself and returns

- ``encode(pixels) -> (B, C)``: one pooled vector per image (what the aligner projects), and
- ``features(pixels) -> (B, R, C)``: one vector per image region or patch (for local losses).

Architectures (``ImageTowerConfig.arch``):

``tiny``
    A four-stage GroupNorm CNN (~0.3 M parameters) for tests and CPU demos.
``vit_tiny``
    timm's ``VisionTransformer`` at small sizes (``patch_size``, ``vit_depth``, ``vit_width``,
    ``vit_heads``; random init) so LoRA can sit on attention in CPU runs
    (:mod:`medvl.models.towers.vit_tiny`).
``vit_b16``
    ``transformers.ViTModel`` (patch 16, 768 wide, 12 layers) built from a ``ViTConfig``; a
    local ViT directory in ``pretrained`` replaces the random init. Pooled = CLS token.
``resnet50`` / ``densenet121``
    torchvision backbones; ``pretrained`` is a local ``.safetensors`` file or a state-dict
    checkpoint read with ``torch.load(weights_only=True)``.
``hf``
    Any ``transformers`` vision ``AutoModel`` directory (or hub name where there is network);
    its processor's per-channel mean/std are folded into the patch embedding.
``xrv_densenet``
    torchxrayvision's DenseNet-121 with its own normalisation and weight files
    (:mod:`medvl.models.towers.xrv`).
``timm``
    Any ``timm.create_model`` name (``timm_model``) with an optional checkpoint file
    (:mod:`medvl.models.towers.timm_tower`).

One channel, no copies: when 3-channel weights are loaded, the source's per-channel mean/std
(the processor's, timm's, or ImageNet's for torchvision checkpoints) are folded exactly into the
first convolution (:class:`~medvl.models.towers.grayscale.GrayInputConv`) and recorded as
``channel_mean``/``channel_std``, never averaged into one number. Models saved before that record
one scalar ``mean``/``std`` and a summed one-channel first kernel; they load and run as saved.
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
from medvl.models.towers.grayscale import convert_to_grayscale, fold_gray_input, sum_rgb_kernel
from medvl.models.towers.hf_auto import model_from_config

logger = logging.getLogger(__name__)

IMAGE_ARCHS = (
    "tiny",
    "vit_tiny",
    "vit_b16",
    "resnet50",
    "densenet121",
    "hf",
    "open_clip",
    "timm",
    "xrv_densenet",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_INIT_MEAN, RANDOM_INIT_STD = 0.5, 0.25


@dataclass
class ImageTowerConfig:
    """How to build an image tower.

    ``mean``/``std`` of ``None`` are resolved when the tower is built and written back, so a
    saved model always records the normalisation it was trained with: loaded weights get their
    source's per-channel statistics in ``channel_mean``/``channel_std`` (ImageNet's for
    torchvision checkpoints; ``mean``/``std`` become 0/1), random weights 0.5/0.25. An explicit
    ``mean``/``std`` with torchvision weights sums the first kernel's RGB channels instead.
    ``gradient_checkpointing`` trades compute for activation memory (``checkpoint_policy``:
    ``full`` or ``selective``, see :func:`medvl.models.towers.checkpointing.checkpoint_kwargs`;
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
    pooling: Literal["auto", "pooler"] = "auto"
    channel_mean: tuple[float, ...] | None = None
    channel_std: tuple[float, ...] | None = None
    timm_model: str | None = None  # arch timm: a timm.create_model name (pretrained: checkpoint)
    xrv_op_threshs: bool = False  # arch xrv_densenet: the weights carry operating points
    patch_size: int = 16  # arch vit_tiny: patch side, and the sizes below
    vit_depth: int = 4
    vit_width: int = 192
    vit_heads: int = 3

    def __post_init__(self) -> None:
        if self.arch not in IMAGE_ARCHS:
            raise ValueError(f"image arch {self.arch!r} is not one of {list(IMAGE_ARCHS)}")
        if (self.channel_mean is None) != (self.channel_std is None):
            raise ValueError("channel_mean and channel_std go together")
        if self.channel_mean is not None:
            if self.arch not in ("hf", "vit_b16", "open_clip", "timm", "resnet50", "densenet121"):
                raise ValueError(
                    f"per-channel statistics need an RGB-pretrained tower, not {self.arch!r}"
                )
            if (self.mean, self.std) not in ((None, None), (0.0, 1.0)):
                raise ValueError(
                    f"mean {self.mean}/std {self.std} conflict with the source's per-channel "
                    f"statistics {self.channel_mean}/{self.channel_std} (folded into the first "
                    "layer)"
                )
            self.mean, self.std = 0.0, 1.0
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
        if config.channel_mean is not None:
            fold_gray_input(model, config.channel_mean, config.channel_std)
        self.model = model
        hf = model.config
        self.out_dim = int(getattr(hf, "hidden_size", 0) or hf.hidden_sizes[-1])
        if config.gradient_checkpointing:
            enable_hf_checkpointing(
                model, config.checkpoint_every_n_layers, config.checkpoint_policy
            )

    def forward_both(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        x = self.prepare(pixels)
        out = self.model(pixel_values=x)
        hidden = out.last_hidden_state
        if self.config.pooling == "pooler":
            return out.pooler_output, hidden
        if hidden.dim() == 4:
            local = hidden.flatten(2).transpose(1, 2)
            return local.mean(dim=1), local
        return hidden[:, 0], hidden[:, 1:]

    def hf_config_dict(self) -> dict[str, Any]:
        return self.model.config.to_dict()


class TorchvisionTower(ImageTower):
    """torchvision ResNet-50 or DenseNet-121 without its classifier; pooled = global mean.

    With ``channel_mean``/``channel_std`` the first convolution keeps its RGB kernel and folds
    the statistics in (:class:`~medvl.models.towers.grayscale.GrayInputConv`); without them
    (explicit scalar ``mean``/``std``, random init, models saved before) its kernel is summed
    into one channel. Loading a state dict whose first kernel does not fit that choice fails.
    """

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
        if config.channel_mean is not None:
            fold_gray_input(net, config.channel_mean, config.channel_std)
        else:
            convert_to_grayscale(net)
        if config.arch == "resnet50":
            net.fc = nn.Identity()
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            self.blocks = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        else:
            self.stem = nn.Identity()
            self.blocks = nn.ModuleList([nn.Sequential(net.features, nn.ReLU())])
        self.register_load_state_dict_pre_hook(_check_first_kernel)

    @property
    def first_kernel_key(self) -> str:
        """State-dict key of the first convolution's kernel."""
        return "stem.0.weight" if self.config.arch == "resnet50" else "blocks.0.0.conv0.weight"

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
        else:
            renamed = {"blocks.0.0." + k.removeprefix("features."): v for k, v in state.items()}
        first = self.first_kernel_key
        if first in renamed and self.config.channel_mean is None:
            renamed[first] = sum_rgb_kernel(renamed[first])
        result = self.load_state_dict(renamed, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{path}: not a {self.config.arch} checkpoint; missing "
                f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )


def _check_first_kernel(
    tower: TorchvisionTower, state: dict[str, Tensor], prefix: str, *args: Any
) -> None:
    """Refuse weights whose first kernel does not fit the recorded normalisation."""
    kernel = state.get(prefix + tower.first_kernel_key)
    config = tower.config
    per_channel = config.channel_mean is not None
    if kernel is None or kernel.dim() != 4 or kernel.shape[1] == (3 if per_channel else 1):
        return
    recorded = (
        f"per-channel mean/std {config.channel_mean}/{config.channel_std}"
        if per_channel
        else f"one mean/std {config.mean}/{config.std}"
    )
    raise ValueError(
        f"the first {config.arch} convolution in the weights takes {kernel.shape[1]} channel(s) "
        f"but the config records {recorded} (that needs {3 if per_channel else 1})"
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


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def read_image_processor(path: str | Path) -> tuple[dict[str, Any], Path] | None:
    """A transformers image processor's settings and the file they came from, if any.

    ``preprocessor_config.json`` holds them at the top level; ``processor_config.json``
    (transformers 5) under ``image_processor``.
    """
    for name in PROCESSOR_FILES:
        file = Path(path) / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}: not valid JSON ({err})") from None
        data = data.get("image_processor", data) if name == "processor_config.json" else data
        return data, file
    return None


def source_channel_stats(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Per-channel ``image_mean``/``image_std`` of a transformers image processor, if any."""
    found = read_image_processor(path)
    if found is None:
        return None
    data, file = found
    if data.get("do_normalize") is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = data.get("image_mean"), data.get("image_std")
    if not mean or not std:
        raise ValueError(f"{file}: no image_mean/image_std; cannot tell the model's normalisation")
    if isinstance(mean, (int, float)):
        mean, std = [mean] * 3, [std] * 3
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _build_hf_model(
    config: ImageTowerConfig, hf_config: dict[str, Any] | None, source: str | None
) -> nn.Module:
    from transformers import AutoConfig, AutoModel, ViTModel

    if hf_config is not None:
        cfg = AutoConfig.for_model(**hf_config)
        if config.channel_mean is None:
            cfg.num_channels = 1
        kwargs = {"add_pooling_layer": False} if cfg.model_type == "vit" else {}
        return model_from_config(cfg, config.attn_implementation, **kwargs)
    if source is None:
        return ViTModel(_vit_b16_config(config), add_pooling_layer=False)
    cfg = AutoConfig.from_pretrained(source)
    kwargs = {"add_pooling_layer": False} if cfg.model_type == "vit" else {}
    model = _with_attn(AutoModel.from_pretrained, source, config.attn_implementation, **kwargs)
    if config.channel_mean is None:
        stats = source_channel_stats(source)
        if stats is None:
            convert_to_grayscale(model)
        else:
            config.channel_mean, config.channel_std = stats
            config.mean, config.std = 0.0, 1.0
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
    if config.arch == "open_clip":
        raise ValueError("open_clip towers come with their model: create_aligner(open_clip dir)")
    if not load_weights and config.arch == "hf" and hf_config is None:
        raise ValueError("arch 'hf' without weights needs its saved transformers config")
    source = config.pretrained if load_weights else None
    loaded = False
    if config.arch == "timm":
        from medvl.models.towers.timm_tower import TimmTower

        return TimmTower(config, load_weights=load_weights)
    if config.arch == "xrv_densenet":
        from medvl.models.towers.xrv import XrvDenseNetTower

        return XrvDenseNetTower(config, load_weights=load_weights)
    if config.arch == "tiny":
        tower: ImageTower = TinyConvTower(config)
    elif config.arch == "vit_tiny":
        from medvl.models.towers.vit_tiny import TimmViTTower

        tower = TimmViTTower(config)
    elif config.arch in ("vit_b16", "hf"):
        model = _build_hf_model(config, hf_config, source)
        tower = HFVisionTower(config, model)
        loaded = hf_config is None and source is not None
    else:
        if source is not None and (config.channel_mean, config.mean, config.std) == (None,) * 3:
            config.channel_mean, config.channel_std = IMAGENET_MEAN, IMAGENET_STD
            config.mean, config.std = 0.0, 1.0
        tower = TorchvisionTower(config)
        if source is not None:
            tower.load_backbone_weights(source)
            loaded = True
    if loaded:
        tower.source_sha256 = sha256_of(source)
    if config.mean is None or config.std is None:
        stats = (sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3) if loaded else None
        mean, std = stats or (RANDOM_INIT_MEAN, RANDOM_INIT_STD)
        config.mean = mean if config.mean is None else config.mean
        config.std = std if config.std is None else config.std
    return tower
