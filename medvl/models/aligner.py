"""MedVLAligner: image tower + text tower + projection heads + a learnable temperature.

Both towers are projected into one ``embed_dim`` space and L2-normalised; similarities are
cosines scaled by ``logit_scale = exp(log_scale)``, clamped to ``max_logit_scale`` (CLIP's
100) so the softmax cannot collapse. Call :meth:`MedVLAligner.clamp_logit_scale_` after each
optimiser step (open_clip does the same) so the parameter never drifts past the clamp, where
its gradient would be zero.

A saved model is a directory::

    config.json        format tag, AlignerConfig, transformers configs of the towers,
                       SHA-256 of model.safetensors, provenance of the starting weights
    model.safetensors  every parameter (never a pickle)
    tokenizer/         the text tower's tokenizer files

:meth:`MedVLAligner.from_pretrained` rebuilds the architecture from ``config.json`` alone (no
access to the original pretrained sources), refuses weights whose SHA-256 differs from the
recorded one, and loads them strictly.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvl.config import ConfigError, from_dict, to_dict
from medvl.models.hub import (
    foreign_read,
    read_saved_json,
    required_part,
    save_state_atomic,
    verified_weights,
    write_descriptor,
)
from medvl.models.towers.image import ImageTower, ImageTowerConfig, build_image_tower
from medvl.models.towers.text import TextTower, TextTowerConfig, build_text_tower

logger = logging.getLogger(__name__)

FORMAT = "medvl-aligner"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass
class AlignerConfig:
    """Architecture of a :class:`MedVLAligner` (both towers, joint space, temperature)."""

    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    embed_dim: int = 256
    projection: Literal["linear", "mlp", "none"] = "linear"
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    init_logit_bias: float | None = None  # SigLIP family: a learned bias, sigmoid loss

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {self.embed_dim}")
        if self.projection not in ("linear", "mlp", "none"):
            raise ValueError(
                f"projection must be 'linear', 'mlp' or 'none', got {self.projection!r}"
            )
        if self.init_temperature <= 0:
            raise ValueError(f"init_temperature must be positive, got {self.init_temperature}")
        if 1.0 / self.init_temperature > self.max_logit_scale:
            raise ValueError(
                f"init_temperature {self.init_temperature} gives a logit scale above "
                f"max_logit_scale {self.max_logit_scale}"
            )


def _projection(in_dim: int, out_dim: int, kind: str) -> nn.Module:
    if kind == "none":
        if in_dim != out_dim:
            raise ValueError(f"projection 'none' needs tower width {in_dim} == embed_dim {out_dim}")
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))


class MedVLAligner(nn.Module):
    """Two towers aligned in one embedding space (CLIP / ConVIRT / MedCLIP family).

    Attributes
    ----------
    image_tower, text_tower
        The towers; ``text_tower.model`` is the transformers model (for MLM and LoRA),
        ``image_tower.model`` too for transformers image towers.
    image_projection, text_projection
        Heads into the joint ``embed_dim`` space.
    provenance
        What the starting weights were (paths and SHA-256), carried into every save.
    """

    def __init__(
        self,
        config: AlignerConfig,
        image_tower: ImageTower | None = None,
        text_tower: TextTower | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.image_tower = image_tower or build_image_tower(config.image)
        self.text_tower = text_tower or build_text_tower(config.text)
        self.image_projection = _projection(
            self.image_tower.out_dim, config.embed_dim, config.projection
        )
        self.text_projection = _projection(
            self.text_tower.out_dim, config.embed_dim, config.projection
        )
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        if config.init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(config.init_logit_bias)))
        else:
            self.logit_bias = None
        self.source: dict[str, Any] = {"format": FORMAT}
        self.provenance: dict[str, Any] = {
            "image": {
                "pretrained": config.image.pretrained,
                "sha256": self.image_tower.source_sha256,
            },
            "text": {
                "name_or_path": config.text.name_or_path,
                "sha256": self.text_tower.source_sha256,
            },
        }
        self.weights_sha256: str | None = None

    @property
    def logit_scale(self) -> Tensor:
        """``exp(log_scale)`` clamped to ``max_logit_scale`` (a 0-d tensor with gradient)."""
        return self.log_logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the log-scale parameter in place (call after each optimiser step)."""
        self.log_logit_scale.clamp_(0.0, math.log(self.config.max_logit_scale))

    @property
    def tokenizer(self) -> Any:
        return self.text_tower.tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """``input_ids`` and ``attention_mask`` for ``texts`` (CPU tensors)."""
        return self.text_tower.tokenize(texts)

    def encode_image(self, pixels: Tensor) -> Tensor:
        """L2-normalised image embeddings ``(B, D)`` from grayscale ``(B, 1, H, W)`` in [0, 1]."""
        return F.normalize(self.image_projection(self.image_tower.encode(pixels)), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """L2-normalised text embeddings ``(B, D)``."""
        pooled = self.text_tower.encode(input_ids, attention_mask)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def forward(
        self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor
    ) -> dict[str, Tensor]:
        """Embed a batch of pairs: ``image_embeds``, ``text_embeds``, ``logit_scale`` (and
        ``logit_bias`` for the SigLIP family)."""
        out = {
            "image_embeds": self.encode_image(pixels),
            "text_embeds": self.encode_text(input_ids, attention_mask),
            "logit_scale": self.logit_scale,
        }
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out

    # ----------------------------------------------------------------------- save / load

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` into ``directory``."""
        directory = Path(directory)
        self.weights_sha256 = save_state_atomic(self, directory / WEIGHTS_FILE, FORMAT)
        if self.source.get("format") == "open_clip":
            from medvl.models.formats.open_clip import save_open_clip_config

            save_open_clip_config(self, directory / TOKENIZER_DIR)
        else:
            self.text_tower.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        image_hf = self.image_tower.hf_config_dict()
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "aligner": to_dict(self.config),
            "image_hf_config": image_hf,
            "text_hf_config": self.text_tower.hf_config_dict(),
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": self.weights_sha256,
            "provenance": self.provenance,
            "source": self.source,
        }
        write_descriptor(directory, payload, CONFIG_FILE)
        logger.info("saved aligner to %s (sha256 %s)", directory, self.weights_sha256[:12])

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device | None = None, **overrides: Any
    ) -> MedVLAligner:
        """Load a saved aligner (in eval mode, on ``device``), verifying the weights' SHA-256 first.

        ``overrides`` patch non-architectural settings (e.g. ``text__gradient_checkpointing=
        True``, see :func:`create_aligner`); architecture changes fail the strict load.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        payload = read_saved_config(directory)
        weights, actual = verified_weights(directory, payload, "aligner", WEIGHTS_FILE)
        config = config_with_overrides(
            payload["aligner"], overrides, where=str(directory / CONFIG_FILE)
        )
        source = payload.get("source", {"format": FORMAT})
        tokenizer_dir = required_part(directory, TOKENIZER_DIR, "aligner")
        if source.get("format") == "open_clip":
            from medvl.models.formats.open_clip import rebuild_open_clip

            image_tower, text_tower = rebuild_open_clip(config, source, tokenizer_dir)
        else:
            image_tower = build_image_tower(
                config.image, hf_config=payload.get("image_hf_config"), load_weights=False
            )
            text_tower = build_text_tower(
                config.text, hf_config=payload["text_hf_config"], tokenizer_dir=tokenizer_dir
            )
        model = cls(config, image_tower=image_tower, text_tower=text_tower)
        state = load_file(str(weights))
        try:
            result = model.load_state_dict(state, strict=False)
        except ValueError as err:  # a tower's own check, e.g. its recorded normalisation
            raise ValueError(f"{weights}: {err}") from None
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{weights}: does not fit the architecture in config.json; missing "
                f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
        model.provenance = payload.get("provenance", model.provenance)
        model.source = source
        model.weights_sha256 = actual
        model.eval()
        return model.to(device) if device is not None else model


def read_saved_config(directory: str | Path) -> dict[str, Any]:
    """Read and check the ``config.json`` of a saved aligner directory."""
    return read_saved_json(directory, CONFIG_FILE, FORMAT, FORMAT_VERSION, "MedVLAligner")


def _set_nested(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.replace("__", ".").split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def config_with_overrides(
    base: dict[str, Any], overrides: dict[str, Any], where: str
) -> AlignerConfig:
    """An :class:`AlignerConfig` from a plain mapping with ``overrides`` patched in."""
    data = json.loads(json.dumps(base))
    for key, value in overrides.items():
        _set_nested(data, key, value)
    try:
        return from_dict(AlignerConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "image": {"arch": "tiny", "image_size": 64},
        "text": {"name_or_path": "tiny-bert", "max_length": 64},
        "embed_dim": 64,
    },
    "tiny-minilm": {
        "image": {"arch": "tiny", "image_size": 64},
        "text": {"name_or_path": "all-minilm-l6-v2", "max_length": 128},
        "embed_dim": 128,
    },
    "vit_tiny-minilm": {  # a 4 x 192 ViT at 128 px: LoRA on attention, on CPU
        "image": {"arch": "vit_tiny", "image_size": 128},
        "text": {"name_or_path": "all-minilm-l6-v2", "max_length": 128},
        "embed_dim": 128,
    },
    "resnet50-minilm": {
        "image": {"arch": "resnet50", "image_size": 224},
        "text": {"name_or_path": "all-minilm-l6-v2", "max_length": 128},
        "embed_dim": 256,
    },
    "densenet121-minilm": {
        "image": {"arch": "densenet121", "image_size": 224},
        "text": {"name_or_path": "all-minilm-l6-v2", "max_length": 128},
        "embed_dim": 256,
    },
    "vit_b16-minilm": {
        "image": {"arch": "vit_b16", "image_size": 224},
        "text": {"name_or_path": "all-minilm-l6-v2", "max_length": 128},
        "embed_dim": 256,
    },
    "vit_b16-bert_base": {
        "image": {"arch": "vit_b16", "image_size": 224},
        "text": {"name_or_path": "bert-base", "max_length": 128},
        "embed_dim": 512,
    },
}


WEIGHT_SOURCE_KEYS = ("image.arch", "image.pretrained", "text.name_or_path")


def create_aligner(
    name_or_dir: str | Path | AlignerConfig, checkpoint: str | Path | None = None, **overrides: Any
) -> MedVLAligner:
    """Build an aligner from a preset name, a config, or a saved directory.

    Parameters
    ----------
    name_or_dir
        A preset (``tiny``, ``tiny-minilm``, ``vit_tiny-minilm``, ``resnet50-minilm``,
        ``densenet121-minilm``, ``vit_b16-minilm``, ``vit_b16-bert_base``), an
        :class:`AlignerConfig`, a directory written by :meth:`MedVLAligner.save_pretrained`,
        or a transformers ``CLIPModel`` / ``SiglipModel`` directory with its tokenizer and
        preprocessor config, an open_clip hub directory (``open_clip_config.json`` + weights),
        told apart by
        :func:`medvl.models.formats.detect_format`, or ``open_clip:<model name>`` with
        ``checkpoint``.
    checkpoint
        With ``open_clip:<model name>`` (e.g. ``open_clip:ViT-B-16``): the checkpoint file
        open_clip loads into that architecture.
    overrides
        Config values to change; nested keys as ``image__image_size=128`` or, via a dict,
        ``**{"text.max_length": 64}``.
    """
    if isinstance(name_or_dir, AlignerConfig):
        base = to_dict(name_or_dir)
        return MedVLAligner(config_with_overrides(base, overrides, where="AlignerConfig"))
    key = str(name_or_dir)
    if key.startswith("open_clip:"):
        from medvl.models.formats.open_clip import load_open_clip

        return load_open_clip(key, None if checkpoint is None else str(checkpoint), **overrides)
    if key in PRESETS:
        return MedVLAligner(config_with_overrides(PRESETS[key], overrides, where=f"preset {key!r}"))
    if Path(key).is_dir():
        from medvl.models.formats import detect_format, load_foreign_aligner

        fixed = [k for k in overrides if k.replace("__", ".") in WEIGHT_SOURCE_KEYS]
        if fixed:
            raise ValueError(
                f"{key}: a model directory brings its own weights; {fixed[0]} cannot change "
                "them (start from a preset to choose towers)"
            )
        fmt = detect_format(key)
        if fmt == FORMAT:
            return MedVLAligner.from_pretrained(key, **overrides)
        with foreign_read(key, f"a {fmt} model"):
            return load_foreign_aligner(key, fmt, **overrides)
    raise ValueError(
        f"{key!r} is neither an aligner preset ({sorted(PRESETS)}) nor a model directory"
    )
