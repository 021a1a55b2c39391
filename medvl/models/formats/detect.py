"""Which model format a folder holds, told from its files alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medvl.models.aligner import MedVLAligner

HF_FAMILIES = {"clip": "hf_clip", "siglip": "hf_siglip"}
FOREIGN_FORMATS = ("hf_clip", "hf_siglip", "open_clip")
EXPECTED = (
    "expected a medvl aligner (config.json with format 'medvl-aligner'), a transformers "
    "CLIPModel/SiglipModel directory (config.json with model_type 'clip' or 'siglip') or an "
    "open_clip hub directory (open_clip_config.json)"
)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level is not a JSON object")
    return data


def detect_format(directory: str | Path) -> str:
    """``medvl-aligner``, ``hf_clip``, ``hf_siglip`` or ``open_clip`` for ``directory``.

    Raises
    ------
    ValueError
        The folder is none of the known formats (the message names what was expected).
    """
    directory = Path(directory)
    config = directory / "config.json"
    if (directory / "open_clip_config.json").is_file():
        return "open_clip"
    if not config.is_file():
        raise ValueError(f"{directory}: no config.json; {EXPECTED}")
    data = _read_json(config)
    if data.get("format") == "medvl-aligner":
        return "medvl-aligner"
    model_type = data.get("model_type")
    if model_type in HF_FAMILIES:
        return HF_FAMILIES[model_type]
    found = data.get("format") or model_type
    raise ValueError(f"{config}: holds {found!r}; {EXPECTED}")


def load_foreign_aligner(directory: str | Path, fmt: str, **overrides: Any) -> MedVLAligner:
    """Load a directory of format ``fmt`` (from :func:`detect_format`) as a medvl aligner."""
    if fmt in ("hf_clip", "hf_siglip"):
        from medvl.models.formats.hf_clip import load_hf_clip

        return load_hf_clip(directory, **overrides)
    if fmt == "open_clip":
        from medvl.models.formats.open_clip import load_open_clip

        return load_open_clip(directory, **overrides)
    raise ValueError(f"{directory}: format {fmt!r} has no loader")
