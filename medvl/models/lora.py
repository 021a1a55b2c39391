"""LoRA adapters (peft) on the aligner's towers: apply, count, save, load onto a base, merge.

Low-rank adapters (Hu et al., 2021) freeze every pretrained weight ``W`` and learn
``W + (alpha / r) * B A`` with ``A``, ``B`` of rank ``r``: a few hundred thousand parameters
instead of tens of millions, one small file per task, and after merging no inference cost.

Which layers get adapters is config, per tower. A target is either a module-name suffix
(``query``, ``value``, ``qkv``) or a layer type (``Linear``, ``Conv2d``); the empty default
picks the tower family's usual choice (:data:`TEXT_TARGETS`, :data:`IMAGE_TARGETS`). Targets
resolve to explicit module names before peft sees them, so a suffix can never match a layer
of the other tower by accident. :func:`apply_lora_to_modules` is the tower-agnostic core
(the SAM image encoder uses it with ``("qkv",)``).

An adapter directory holds peft's ``adapter_config.json`` + ``adapter_model.safetensors`` and
``medvl_adapter.json`` (towers, targets, trainable count, SHA-256 of the base weights), so an
adapter loaded onto a different base is noticed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from medvl.models.aligner import MedVLAligner
from medvl.models.hub import read_json_object

logger = logging.getLogger(__name__)

ADAPTER_INFO = "medvl_adapter.json"
TOWERS = ("image", "text")
TEXT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "electra": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "mpnet": ("q", "v"),
    "clip_text_model": ("q_proj", "v_proj"),
    "siglip_text_model": ("q_proj", "v_proj"),
}
IMAGE_TARGETS: dict[str, tuple[str, ...]] = {
    "tiny": ("Conv2d",),
    "vit_tiny": ("attn.qkv", "attn.proj"),  # q, k, v (one fused layer) and the output
    "vit_b16": ("query", "value"),
    "hf": ("query", "value"),
    "resnet50": ("conv1", "conv2", "conv3"),
    "densenet121": ("conv1", "conv2"),
    "timm": ("qkv", "conv1", "conv2"),
    "open_clip": ("c_fc", "c_proj", "qkv"),
    "xrv_densenet": ("conv1", "conv2"),
}
_LAYER_TYPES: dict[str, type[nn.Module]] = {"Linear": nn.Linear, "Conv2d": nn.Conv2d}


@dataclass
class LoraConfig:
    """LoRA settings: rank, scaling, dropout and which towers/layers get adapters."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    towers: tuple[str, ...] = ("image",)
    text_targets: tuple[str, ...] = ()
    image_targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ValueError(f"LoRA needs r >= 1 and alpha > 0, got r={self.r}, alpha={self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must lie in [0, 1), got {self.dropout}")
        unknown = [t for t in self.towers if t not in TOWERS]
        if unknown or not self.towers:
            raise ValueError(
                f"towers must be a non-empty subset of {list(TOWERS)}, got {list(self.towers)}"
            )


def _matches(name: str, module: nn.Module, targets: Sequence[str]) -> bool:
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        return False
    leaf = name.rsplit(".", 1)[-1]
    for target in targets:
        layer_type = _LAYER_TYPES.get(target)
        if layer_type is not None and type(module) is layer_type:
            return True
        if name == target or name.endswith("." + target) or leaf == target:
            return True
    return False


def module_names(root: nn.Module, targets: Sequence[str], prefix: str = "") -> list[str]:
    """Full names (under ``prefix``) of ``root``'s Linear/Conv2d layers matching ``targets``."""
    out = []
    for name, module in root.named_modules():
        if name and _matches(name, module, targets):
            out.append(f"{prefix}.{name}" if prefix else name)
    return out


def tower_targets(aligner: MedVLAligner, tower: str, config: LoraConfig) -> tuple[str, ...]:
    """The configured targets of ``tower``, or its family's default."""
    if tower == "text":
        if config.text_targets:
            return config.text_targets
        family = str(getattr(aligner.text_tower.model.config, "model_type", ""))
        return TEXT_TARGETS.get(family, ("query", "value"))
    if config.image_targets:
        return config.image_targets
    if aligner.config.image.arch == "hf":  # CLIP/SigLIP vision towers name them q_proj/v_proj
        family = str(getattr(aligner.image_tower.model.config, "model_type", ""))
        if family in ("clip_vision_model", "siglip_vision_model"):
            return ("q_proj", "v_proj")
    return IMAGE_TARGETS[aligner.config.image.arch]


def lora_target_names(aligner: MedVLAligner, config: LoraConfig) -> list[str]:
    """Every module name of ``aligner`` that gets an adapter, tower by tower."""
    names: list[str] = []
    for tower in config.towers:
        module = aligner.image_tower if tower == "image" else aligner.text_tower
        targets = tower_targets(aligner, tower, config)
        found = module_names(module, targets, prefix=f"{tower}_tower")
        if not found:
            raise ValueError(
                f"LoRA targets {list(targets)} match no Linear/Conv2d layer of the {tower} tower "
                f"({type(module).__name__}); set lora.{tower}_targets"
            )
        names += found
    return names


def apply_lora_to_modules(
    model: nn.Module, target_names: Sequence[str], r: int, alpha: int, dropout: float
) -> Any:
    """Wrap ``model`` in a peft ``PeftModel`` with LoRA on exactly ``target_names``.

    Every other parameter of ``model`` is frozen; the returned model forwards attribute access
    (``encode_image`` ...) to ``model``, whose layers now carry the adapters.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    if not target_names:
        raise ValueError("LoRA needs at least one target module")
    peft_config = PeftLoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_names), bias="none"
    )
    return get_peft_model(model, peft_config)


def apply_lora(aligner: MedVLAligner, config: LoraConfig) -> Any:
    """LoRA on the configured towers of ``aligner``; logs the trainable-parameter count."""
    names = lora_target_names(aligner, config)
    model = apply_lora_to_modules(aligner, names, config.r, config.alpha, config.dropout)
    trainable, total = count_parameters(model)
    logger.info(
        "LoRA r=%d on %s (%d layers): %s trainable of %s parameters (%.2f%%)",
        config.r,
        "+".join(config.towers),
        len(names),
        f"{trainable:,}",
        f"{total:,}",
        100.0 * trainable / max(total, 1),
    )
    model.medvl_lora = config
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def save_adapter(model: Any, directory: str | Path) -> Path:
    """Write only the adapter (peft files + ``medvl_adapter.json``) to ``directory``."""
    directory = Path(directory)
    model.save_pretrained(str(directory))
    base = model.get_base_model()
    config: LoraConfig | None = getattr(model, "medvl_lora", None)
    info = {
        "base_weights_sha256": getattr(base, "weights_sha256", None),
        "towers": list(config.towers) if config else None,
        "trainable_parameters": count_parameters(model)[0],
    }
    (directory / ADAPTER_INFO).write_text(json.dumps(info, indent=2))
    return directory


def load_adapter(base: nn.Module, directory: str | Path, trainable: bool = False) -> Any:
    """Put a saved adapter onto ``base`` (warns when it was trained on other base weights)."""
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{directory}: not a LoRA adapter (adapter_config.json missing)")
    read_json_object(
        directory / "adapter_config.json", "LoRA adapter", ("peft_type", "target_modules")
    )
    info_file = directory / ADAPTER_INFO
    if info_file.is_file():
        recorded = json.loads(info_file.read_text()).get("base_weights_sha256")
        actual = getattr(base, "weights_sha256", None)
        if recorded and actual and recorded != actual:
            logger.warning(
                "%s was trained on base weights %s but is loaded onto %s",
                directory,
                recorded[:12],
                actual[:12],
            )
    return PeftModel.from_pretrained(base, str(directory), is_trainable=trainable)


def merge_lora(model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge an adapter into its base aligner and save a plain aligner for deployment."""
    aligner = MedVLAligner.from_pretrained(model_dir)
    merged = load_adapter(aligner, adapter_dir).merge_and_unload()
    merged.provenance = {
        **merged.provenance,
        "merged_adapter": {"path": str(adapter_dir), "base": str(model_dir)},
    }
    merged.save_pretrained(out_dir)
    logger.info("merged %s into %s -> %s", adapter_dir, model_dir, out_dir)
    return Path(out_dir)
