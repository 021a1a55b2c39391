"""``medvl export``: a medvl aligner back into the format other tools load.

``hf``        a model that started as a transformers CLIP/SigLIP directory, back to one
``open_clip`` a model that started as open_clip, back to a hub directory
``text-encoder`` the text tower alone as a transformers ``AutoModel`` directory (+ tokenizer)

A medvl LoRA adapter (keyed to ``MedVLAligner`` module paths) is rewritten for the exported
model (:func:`export_adapter`): its target modules and weights renamed to the plain
transformers/open_clip module names, so plain ``peft.PeftModel.from_pretrained`` applies it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from medvl.models.aligner import MedVLAligner

logger = logging.getLogger(__name__)

ExportTarget = Literal["hf", "open_clip", "text-encoder"]
EXPORT_TARGETS = ("hf", "open_clip", "text-encoder")


def export_text_encoder(aligner: MedVLAligner, out: str | Path) -> Path:
    """Write the text tower's transformers model and tokenizer to ``out``."""
    model = aligner.text_tower.model
    if not hasattr(model, "save_pretrained"):
        model = getattr(model, "transformer", None)  # open_clip's HF text towers
    if model is None or not hasattr(model, "save_pretrained"):
        raise ValueError(
            "this model's text tower is not a transformers model (an open_clip text "
            "transformer); export it with --to open_clip"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer = aligner.tokenizer
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # open_clip's HFTokenizer wraps one
    tokenizer.save_pretrained(str(out))
    logger.info("exported the text tower to %s", out)
    return out


PEFT_PREFIX = "base_model.model."


def _module_renamer(aligner: MedVLAligner, to: str) -> dict[str, str]:
    """Old -> new prefixes of module names for ``to`` (towers not exported are dropped)."""
    if to == "hf":
        return {"image_tower.model.": "vision_model.", "text_tower.model.": "text_model."}
    if to == "text-encoder":
        inner = "" if hasattr(aligner.text_tower.model, "save_pretrained") else "transformer."
        return {f"text_tower.model.{inner}": ""}
    return {"image_tower.model.": "visual.", "text_tower.model.": "text."}


def _rename(name: str, prefixes: dict[str, str], plain_text: bool) -> str | None:
    for old, new in prefixes.items():
        if name.startswith(old):
            rest = name[len(old) :]
            if plain_text and new == "text.":
                from medvl.models.formats.open_clip import TEXT_KEYS

                new = "" if rest.startswith(TEXT_KEYS) else new
            return new + rest
    return None


def export_adapter(aligner: MedVLAligner, adapter: str | Path, to: str, out: str | Path) -> Path:
    """Rewrite a medvl LoRA adapter for the model exported as ``to``; returns its folder."""
    from safetensors.torch import load_file, save_file

    adapter, out = Path(adapter), Path(out)
    config_file, weights_file = (
        adapter / "adapter_config.json",
        adapter / "adapter_model.safetensors",
    )
    if not config_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(f"{adapter}: not a LoRA adapter (adapter_config.json and "
                                "adapter_model.safetensors expected)")  # fmt: skip
    config = json.loads(config_file.read_text())
    prefixes = _module_renamer(aligner, to)
    model_cfg = aligner.source.get("model_cfg", {})
    plain_text = to == "open_clip" and not (
        model_cfg.get("custom_text") or "hf_model_name" in model_cfg.get("text_cfg", {})
    )
    targets = config.get("target_modules") or []
    renamed = [n for n in (_rename(t, prefixes, plain_text) for t in targets) if n is not None]
    if not renamed:
        raise ValueError(f"{adapter}: no adapted layer belongs to what --to {to} exports")
    weights = {}
    for key, value in load_file(str(weights_file)).items():
        name = _rename(key.removeprefix(PEFT_PREFIX), prefixes, plain_text)
        if name is not None:
            weights[PEFT_PREFIX + name] = value
    out.mkdir(parents=True, exist_ok=True)
    config.update(target_modules=renamed, base_model_name_or_path=None)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file(weights, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    logger.info("adapter rewritten for %s: %d layers -> %s", to, len(renamed), out)
    return out


def export_aligner(aligner: MedVLAligner, to: str, out: str | Path) -> Path:
    """Export ``aligner`` as ``to`` (one of :data:`EXPORT_TARGETS`) into ``out``."""
    if to == "hf":
        from medvl.models.formats.hf_clip import export_hf_clip

        return export_hf_clip(aligner, out)
    if to == "open_clip":
        from medvl.models.formats.open_clip import export_open_clip

        return export_open_clip(aligner, out)
    if to == "text-encoder":
        return export_text_encoder(aligner, out)
    raise ValueError(f"--to {to!r}: expected one of {list(EXPORT_TARGETS)}")
