"""transformers ``CLIPModel`` / ``SiglipModel`` directories in and out.

In: both towers with their own pooling (CLIP: vision ``post_layernorm`` on the class token,
text at the end-of-text token; SigLIP: the attention-pooling head and the text head on the
last token), CLIP's projections, the learned logit scale, SigLIP's logit bias, the tokenizer
(SigLIP pads to its 64 positions, as it was trained), and the processor's per-channel
mean/std folded into the patch embedding
(:class:`~medvl.models.towers.grayscale.GrayInputConv`). A gray image in [0, 1] then gives
what the source computes on the same image in RGB with its own processor.

Out: :func:`export_hf_clip` writes the directory back (config, weights, tokenizer,
preprocessor) so ``CLIPModel.from_pretrained`` / ``SiglipModel.from_pretrained`` load it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from medvl.config import to_dict
from medvl.models.aligner import AlignerConfig, MedVLAligner, config_with_overrides
from medvl.models.hub import sha256_of
from medvl.models.towers.image import (
    HFVisionTower,
    ImageTowerConfig,
    read_image_processor,
    source_channel_stats,
)
from medvl.models.towers.text import TextTower, TextTowerConfig

logger = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"
SIGLIP_MAX_LENGTH = 64


def _processor_size(data: dict[str, Any], file: Path) -> int | None:
    """The square input side the processor feeds the model (crop size, else resize size)."""
    factor = data.get("rescale_factor", 1 / 255)
    if data.get("do_rescale", True) and not math.isclose(factor, 1 / 255, rel_tol=1e-6):
        raise ValueError(
            f"{file}: rescale_factor {factor}; expected 1/255 (medvl feeds display-space "
            "pixels in [0, 1])"
        )
    size = data.get("crop_size") if data.get("do_center_crop") else data.get("size")
    if isinstance(size, dict):
        side = size.get("height") or size.get("shortest_edge")
        if size.get("width") not in (None, side):
            raise ValueError(f"{file}: non-square input {size}")
        return int(side) if side else None
    return int(size) if size else None


def read_preprocessing(directory: Path, image_size: int) -> dict[str, Any]:
    """The source's image processor settings, checked against the model's input size.

    Raises
    ------
    ValueError
        No processor file (the statistics would be a guess), or its input size differs from
        the vision config's ``image_size``.
    """
    found = read_image_processor(directory)
    if found is None:
        raise ValueError(
            f"{directory}: no {PREPROCESSOR_FILE} (or processor_config.json); its image_mean/"
            "image_std are needed so the tower gets the model's own normalisation"
        )
    data, file = found
    side = _processor_size(data, file)
    if side is not None and side != image_size:
        raise ValueError(
            f"{file}: input size {side} does not match the vision config's image_size {image_size}"
        )
    return data


def _tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{directory}: no loadable tokenizer files ({err})") from None


def load_hf_clip(directory: str | Path, **overrides: Any) -> MedVLAligner:
    """A medvl aligner holding a transformers CLIP or SigLIP model's towers and head."""
    from transformers import AutoConfig, AutoModel

    directory = Path(directory)
    hf_config = AutoConfig.from_pretrained(str(directory))
    family = hf_config.model_type
    if family not in ("clip", "siglip"):
        raise ValueError(
            f"{directory / 'config.json'}: model_type {family!r}; expected clip or siglip"
        )
    vision_cfg, text_cfg = hf_config.vision_config, hf_config.text_config
    processor = read_preprocessing(directory, vision_cfg.image_size)
    mean, std = source_channel_stats(directory)
    tokenizer = _tokenizer(directory)
    try:
        source = AutoModel.from_pretrained(str(directory))
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{directory}: weights do not load as {family} ({err})") from None
    siglip = family == "siglip"
    scale = float(source.logit_scale.detach().reshape(()).exp())
    config = AlignerConfig(
        image=ImageTowerConfig(
            arch="hf",
            pretrained=str(directory),
            image_size=vision_cfg.image_size,
            pooling="pooler",
            channel_mean=mean,
            channel_std=std,
        ),
        text=TextTowerConfig(
            name_or_path=str(directory),
            pooling="pooler",
            max_length=int(text_cfg.max_position_embeddings),
            padding="max_length" if siglip else "longest",
        ),
        embed_dim=int(vision_cfg.hidden_size if siglip else hf_config.projection_dim),
        projection="none" if siglip else "linear",
        init_temperature=1.0 / scale,
        max_logit_scale=max(100.0, float(math.ceil(scale))),
        init_logit_bias=float(source.logit_bias.detach().reshape(())) if siglip else None,
    )
    config = config_with_overrides(to_dict(config), overrides, where=str(directory))
    image_tower = HFVisionTower(config.image, source.vision_model)
    text_tower = TextTower(config.text, source.text_model, tokenizer)
    image_tower.source_sha256 = text_tower.source_sha256 = sha256_of(directory)
    aligner = MedVLAligner(config, image_tower=image_tower, text_tower=text_tower)
    with torch.no_grad():
        if not siglip:
            aligner.image_projection.weight.copy_(source.visual_projection.weight)
            aligner.text_projection.weight.copy_(source.text_projection.weight)
        aligner.log_logit_scale.copy_(source.logit_scale.reshape(()))
        if siglip:
            aligner.logit_bias.copy_(source.logit_bias.reshape(()))
    aligner.source = {
        "format": f"hf_{family}",
        "hf_config": hf_config.to_dict(),
        "preprocessor": processor,
    }
    aligner.eval()
    logger.info("loaded transformers %s model from %s", family, directory)
    return aligner


def hf_clip_state(aligner: MedVLAligner) -> dict[str, Tensor]:
    """The aligner's weights under ``CLIPModel``/``SiglipModel`` names."""
    siglip = aligner.source["format"] == "hf_siglip"
    state: dict[str, Tensor] = {}
    for key, value in aligner.image_tower.model.state_dict().items():
        state[f"vision_model.{key}"] = value
    for key, value in aligner.text_tower.model.state_dict().items():
        state[f"text_model.{key}"] = value
    scale = aligner.log_logit_scale.detach()
    state["logit_scale"] = scale.reshape(1) if siglip else scale.reshape(())
    if siglip:
        state["logit_bias"] = aligner.logit_bias.detach().reshape(1)
    else:
        state["visual_projection.weight"] = aligner.image_projection.weight
        state["text_projection.weight"] = aligner.text_projection.weight
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def export_hf_clip(aligner: MedVLAligner, out: str | Path) -> Path:
    """Write a transformers directory that ``AutoModel.from_pretrained`` loads back."""
    from safetensors.torch import save_file
    from transformers import AutoConfig

    fmt = aligner.source.get("format")
    if fmt not in ("hf_clip", "hf_siglip"):
        raise ValueError(f"the model started as {fmt!r}, not a transformers CLIP/SigLIP model")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = dict(aligner.source["hf_config"])
    hf_config = AutoConfig.for_model(**payload)
    hf_config.save_pretrained(str(out))
    save_file(hf_clip_state(aligner), str(out / "model.safetensors"), metadata={"format": "pt"})
    aligner.tokenizer.save_pretrained(str(out))
    image = aligner.config.image
    processor = {
        **aligner.source["preprocessor"],
        "image_mean": list(image.channel_mean),
        "image_std": list(image.channel_std),
    }
    (out / PREPROCESSOR_FILE).write_text(json.dumps(processor, indent=2))
    logger.info("exported %s to %s", fmt, out)
    return out
