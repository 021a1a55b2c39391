"""Reading weights safely and recording what was read.

Weights come from local paths first (a hub name only where the user has network), are read as
safetensors or with ``torch.load(weights_only=True)`` (never a pickle that can run code), and
every source gets a SHA-256 so a saved model or a result can name exactly what it started from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def save_state_atomic(module: nn.Module, path: Path, producer: str) -> str:
    """Write ``module``'s state dict to ``path`` as safetensors (temp file + rename).

    Returns the file's SHA-256, the identity recorded beside every saved model.
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "producer": producer})
    tmp.replace(path)
    return sha256_file(path)


def read_saved_json(directory: str | Path, name: str, fmt: str, version: int, what: str) -> dict:
    """Read and check the JSON descriptor ``name`` of a saved ``what`` directory.

    The file must exist, parse, carry ``"format": fmt`` and a ``format_version`` not newer than
    ``version`` (files from a newer medvl are refused rather than half-read).
    """
    path = Path(directory) / name
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a saved {what} ({name} missing)")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if payload.get("format") != fmt:
        raise ValueError(f"{path}: format is {payload.get('format')!r}, expected {fmt!r}")
    if payload.get("format_version", 0) > version:
        raise ValueError(
            f"{path}: format_version {payload['format_version']} is newer than this medvl "
            f"understands ({version}); upgrade medvl"
        )
    return payload


def sha256_of(source: str | Path) -> str | None:
    """SHA-256 of a weights file, or of a model directory's weight files (sorted by name).

    Returns ``None`` for a hub name that is not a local path (nothing local to hash).
    """
    path = Path(source)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    if len(files) == 1:
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path)}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file without unpickling code.

    A checkpoint that wraps the weights (``{"state_dict": ...}`` or ``{"model": ...}``) is
    unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError ...
        raise ValueError(f"{path}: not a weights-only torch checkpoint ({err})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict of tensors")
    return state
