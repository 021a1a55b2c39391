"""open_clip models in and out: hub directories and a model name plus checkpoint.

In: ``open_clip_config.json`` + weights (the layout BiomedCLIP and the LAION models ship in)
or an open_clip model name (``ViT-B-16``) with a training checkpoint (``epoch_32.pt``,
``{"state_dict": ...}``, DDP ``module.`` keys: open_clip's own loader unwraps them). open_clip
builds the model itself, so every tower and projection it knows comes along unchanged: its
ViT and ResNet towers, timm towers with their heads (BiomedCLIP's bias-free MLP), HF text
towers, the logit scale and (SigLIP variants) the logit bias. The towers' outputs are already
projected, so the aligner's own projections are the identity. The preprocessing mean/std
fold into the first convolution (:class:`~medvl.models.towers.grayscale.GrayInputConv`).

Out: :func:`export_open_clip` writes a hub directory ``open_clip.create_model("local-dir:...")``
loads back (text tower keys in the source's own layout).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medvl.config import to_dict
from medvl.models.aligner import AlignerConfig, MedVLAligner, config_with_overrides
from medvl.models.hub import sha256_of
from medvl.models.towers.grayscale import fold_gray_input
from medvl.models.towers.image import ImageTower, ImageTowerConfig
from medvl.models.towers.text import TextTowerConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
TEXT_KEYS = (
    "text_projection",
    "positional_embedding",
    "token_embedding",
    "transformer",
    "ln_final",
)


class OpenClipImageTower(ImageTower):
    """open_clip's ``model.visual`` on gray input; pooled = its projected embedding."""

    def __init__(self, config: ImageTowerConfig, visual: nn.Module, out_dim: int) -> None:
        super().__init__(config)
        fold_gray_input(visual, config.channel_mean, config.channel_std)
        self.model = visual
        self.out_dim = out_dim

    def forward_both(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        pooled = self.model(self.prepare(pixels))
        return pooled, pooled[:, None]


class OpenClipBatchTokenizer:
    """Texts -> open_clip's token ids (padded to its context length) and the padding mask."""

    def __init__(self, tokenizer: Any, pad_id: int) -> None:
        self.tokenizer, self.pad_id = tokenizer, pad_id

    def __call__(self, texts: list[str], **_: Any) -> dict[str, Tensor]:
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of strings, got one string")
        ids = self.tokenizer(list(texts))
        return {"input_ids": ids, "attention_mask": (ids != self.pad_id).long()}


class OpenClipTextTower(nn.Module):
    """open_clip's text tower with its tokenizer; pooled = its projected embedding.

    open_clip pads every text to its context length and pools itself (CLIP at the
    end-of-text token, HF towers as configured), so the mask only marks padding.
    """

    def __init__(self, config: TextTowerConfig, text: nn.Module, tokenizer: Any, out_dim: int):
        super().__init__()
        self.config = config
        self.model = text
        self.tokenizer = tokenizer
        self.out_dim = out_dim
        self.max_length = int(getattr(tokenizer, "context_length", config.max_length))
        self.source_sha256: str | None = None
        inner = getattr(tokenizer, "tokenizer", None)
        self.pad_id = int(getattr(inner, "pad_token_id", None) or 0)

    def batch_tokenizer(self) -> OpenClipBatchTokenizer:
        """A picklable texts -> tensors callable (for data loaders)."""
        return OpenClipBatchTokenizer(self.tokenizer, self.pad_id)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Token ids ``(B, context_length)`` as open_clip makes them, and the padding mask."""
        return self.batch_tokenizer()(texts)

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Projected text embeddings ``(B, D)`` (open_clip's own pooling and projection)."""
        return self.model(input_ids)

    def features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The pooled embedding as one token ``(B, 1, D)`` (open_clip exposes no token grid)."""
        return self.encode(input_ids, attention_mask)[:, None]

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encode(input_ids, attention_mask)

    def hf_config_dict(self) -> None:
        return None


def _create(name: str, checkpoint: str | None, where: str, load_weights: bool = True) -> nn.Module:
    import open_clip

    try:
        return open_clip.create_model(
            name,
            pretrained=checkpoint,
            load_weights=load_weights,
            force_custom_text=True,
            pretrained_text=False,
            require_pretrained=load_weights,
        )
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        first = str(err).splitlines()[0][:300]
        raise ValueError(f"{where}: open_clip cannot build or load it ({first})") from None


def _source_config(source: str | Path, checkpoint: str | None) -> tuple[str, dict, dict, str]:
    """(open_clip name, model_cfg, preprocess_cfg from the file, where) of a source."""
    import open_clip

    path = Path(source)
    if path.is_dir():
        file = path / CONFIG_FILE
        data = json.loads(file.read_text())
        if "model_cfg" not in data:
            raise ValueError(f"{file}: no model_cfg; expected an open_clip hub config")
        return f"local-dir:{path}", data["model_cfg"], data.get("preprocess_cfg", {}), str(path)
    name = str(source).removeprefix("open_clip:")
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ValueError(f"{name!r} is no open_clip model name (open_clip.list_models())")
    if checkpoint is None or not Path(checkpoint).is_file():
        raise ValueError(f"open_clip model {name!r} needs a checkpoint file, got {checkpoint!r}")
    return name, model_cfg, {}, str(checkpoint)


def load_open_clip(
    source: str | Path, checkpoint: str | None = None, **overrides: Any
) -> MedVLAligner:
    """A medvl aligner from an open_clip hub directory or a model name plus checkpoint."""
    import open_clip

    name, model_cfg, file_preprocess, where = _source_config(source, checkpoint)
    model = _create(name, checkpoint, where)
    preprocess = {**open_clip.get_model_preprocess_cfg(model), **file_preprocess}
    tokenizer = open_clip.get_tokenizer(name)
    aligner = _assemble(model, tokenizer, model_cfg, preprocess, where, overrides)
    aligner.source["checkpoint_sha256"] = sha256_of(checkpoint or source)
    aligner.image_tower.source_sha256 = aligner.text_tower.source_sha256 = sha256_of(
        checkpoint or source
    )
    logger.info("loaded open_clip model from %s", where)
    return aligner


def _image_size(model_cfg: dict[str, Any]) -> int:
    size = model_cfg["vision_cfg"].get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise ValueError(f"non-square open_clip input {size} is not supported")
        size = size[0]
    return int(size)


def _assemble(
    model: nn.Module,
    tokenizer: Any,
    model_cfg: dict[str, Any],
    preprocess: dict[str, Any],
    where: str,
    overrides: dict[str, Any],
) -> MedVLAligner:
    side = _image_size(model_cfg)
    size = preprocess.get("size", side)
    size = size[0] if isinstance(size, (list, tuple)) else size
    if int(size) != side:
        raise ValueError(
            f"{where}: preprocess size {size} does not match the vision tower's image_size {side}"
        )
    mean, std = preprocess.get("mean"), preprocess.get("std")
    if not mean or not std:
        raise ValueError(f"{where}: no preprocess mean/std; cannot tell the model's normalisation")
    embed_dim = int(model_cfg["embed_dim"])
    scale = float(model.logit_scale.detach().reshape(-1)[0].exp())
    bias = getattr(model, "logit_bias", None)
    config = AlignerConfig(
        image=ImageTowerConfig(
            arch="open_clip",
            pretrained=where,
            image_size=side,
            pooling="pooler",
            channel_mean=tuple(float(m) for m in mean),
            channel_std=tuple(float(s) for s in std),
        ),
        text=TextTowerConfig(
            name_or_path=where,
            pooling="pooler",
            max_length=int(model_cfg["text_cfg"].get("context_length", 77)),
            padding="max_length",
        ),
        embed_dim=embed_dim,
        projection="none",
        init_temperature=1.0 / scale,
        max_logit_scale=max(100.0, float(math.ceil(scale))),
        init_logit_bias=float(bias.detach().reshape(-1)[0]) if bias is not None else None,
    )
    config = config_with_overrides(to_dict(config), overrides, where=where)
    image = OpenClipImageTower(config.image, model.visual, embed_dim)
    text = OpenClipTextTower(config.text, model.text, tokenizer, embed_dim)
    aligner = MedVLAligner(config, image_tower=image, text_tower=text)
    with torch.no_grad():
        aligner.log_logit_scale.copy_(model.logit_scale.detach().reshape(-1)[0])
        if bias is not None:
            aligner.logit_bias.copy_(bias.detach().reshape(-1)[0])
    aligner.source = {
        "format": "open_clip",
        "model_cfg": model_cfg,
        "preprocess_cfg": {k: v for k, v in preprocess.items() if _json_safe(v)},
        "scalar_shapes": {
            "logit_scale": list(model.logit_scale.shape),
            **({"logit_bias": list(bias.shape)} if bias is not None else {}),
        },
    }
    aligner.eval()
    return aligner


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _hub_config(aligner: MedVLAligner) -> dict[str, Any]:
    return {
        "model_cfg": aligner.source["model_cfg"],
        "preprocess_cfg": aligner.source["preprocess_cfg"],
    }


def _copy_hf_files(aligner: MedVLAligner, out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """HF text towers: put their tokenizer and config files in ``out``; point the config there."""
    text_cfg = dict(config["model_cfg"]["text_cfg"])
    if "hf_model_name" not in text_cfg and "hf_tokenizer_name" not in text_cfg:
        return config
    inner = getattr(aligner.text_tower.tokenizer, "tokenizer", None)
    if inner is not None:
        inner.save_pretrained(str(out))
    hf = getattr(aligner.text_tower.model, "transformer", None)
    if hf is not None and hasattr(hf, "config"):
        hf.config.save_pretrained(str(out))
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if key in text_cfg:
            text_cfg[key] = str(out.resolve())
    model_cfg = {**config["model_cfg"], "text_cfg": text_cfg}
    return {**config, "model_cfg": model_cfg}


def save_open_clip_config(aligner: MedVLAligner, directory: Path) -> None:
    """Write what rebuilds the open_clip architecture without weights into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    config = _copy_hf_files(aligner, directory, _hub_config(aligner))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def rebuild_open_clip(config: AlignerConfig, source: dict[str, Any], directory: Path) -> tuple:
    """Image and text towers with random weights, from a saved aligner's open_clip config."""
    import open_clip

    saved = json.loads((directory / CONFIG_FILE).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "open_clip"
        shutil.copytree(directory, config_dir)  # HF tokenizer/config files where open_clip looks
        text_cfg = saved["model_cfg"]["text_cfg"]
        for key in ("hf_model_name", "hf_tokenizer_name"):
            if key in text_cfg:
                text_cfg[key] = str(config_dir)
        (config_dir / CONFIG_FILE).write_text(json.dumps(saved))
        name = f"local-dir:{config_dir}"
        model = _create(name, None, str(directory), load_weights=False)
        tokenizer = open_clip.get_tokenizer(name)
    embed_dim = int(saved["model_cfg"]["embed_dim"])
    image = OpenClipImageTower(config.image, model.visual, embed_dim)
    text = OpenClipTextTower(config.text, model.text, tokenizer, embed_dim)
    return image, text


def open_clip_state(aligner: MedVLAligner) -> dict[str, Tensor]:
    """The aligner's weights under open_clip's names (the source's text-tower layout)."""
    shapes = aligner.source.get("scalar_shapes", {})
    custom = (
        aligner.source["model_cfg"].get("custom_text")
        or "hf_model_name" in (aligner.source["model_cfg"]["text_cfg"])
    )
    state = {f"visual.{k}": v for k, v in aligner.image_tower.model.state_dict().items()}
    for key, value in aligner.text_tower.model.state_dict().items():
        plain = not custom and key.startswith(TEXT_KEYS)
        state[key if plain else f"text.{key}"] = value
    state["logit_scale"] = aligner.log_logit_scale.detach().reshape(shapes.get("logit_scale", []))
    if aligner.logit_bias is not None:
        state["logit_bias"] = aligner.logit_bias.detach().reshape(shapes.get("logit_bias", []))
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def export_open_clip(aligner: MedVLAligner, out: str | Path) -> Path:
    """Write an open_clip hub directory (config + safetensors weights)."""
    from safetensors.torch import save_file

    if aligner.source.get("format") != "open_clip":
        raise ValueError(f"the model started as {aligner.source.get('format')!r}, not open_clip")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_open_clip_config(aligner, out)
    save_file(open_clip_state(aligner), str(out / WEIGHTS_FILE))
    logger.info("exported open_clip model to %s", out)
    return out
