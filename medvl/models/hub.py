"""Reading weights safely and recording what was read.

Weights come from local paths first (a hub name only where the user has network), are read as
safetensors or with ``torch.load(weights_only=True)`` (never a pickle that can run code), and
every source gets a SHA-256 so a saved model or a result can name exactly what it started from.

Every saved medvl model (aligner, SAM, findings classifier) is a directory with one JSON
descriptor (``config.json``, written by :func:`write_descriptor`, read by
:func:`read_saved_json`) that records its weights file and that file's SHA-256;
:func:`verified_weights` refuses weights that no longer match with the one
:class:`ChecksumError`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
DESCRIPTOR = "config.json"
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """Saved weights do not match the SHA-256 recorded beside them."""


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


def write_descriptor(
    directory: str | Path, payload: dict[str, Any], name: str = DESCRIPTOR
) -> Path:
    """Write a saved model's JSON descriptor atomically (temp file + rename); return its path.

    A crash mid-write leaves the previous descriptor (or none), never a half-written one that
    names weights it does not describe. Keys keep their order (a findings order is meaning).
    """
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
    return path


def verify_sha256(path: Path, recorded: str | None, descriptor: Path) -> str:
    """SHA-256 of ``path``, checked against the value ``descriptor`` records for it.

    Raises
    ------
    ChecksumError
        The file's SHA-256 differs from ``recorded`` (changed or corrupted after saving).
    """
    actual = sha256_file(path)
    if actual != recorded:
        raise ChecksumError(
            f"{path}: SHA-256 is {actual} but {descriptor} records {recorded}; the weights were "
            "changed or corrupted after saving, refusing to load them"
        )
    return actual


def verified_weights(
    directory: str | Path,
    payload: dict[str, Any],
    what: str,
    default_file: str = "model.safetensors",
) -> tuple[Path, str]:
    """The weights file a saved ``what`` directory's descriptor names, and its checked SHA-256.

    ``payload`` is the descriptor read by :func:`read_saved_json`; its ``weights_file``
    (``default_file`` when absent) must exist and hash to its ``weights_sha256``.

    Raises
    ------
    FileNotFoundError
        The weights file is missing.
    ChecksumError
        The weights changed after saving.
    """
    directory = Path(directory)
    weights = directory / payload.get("weights_file", default_file)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights file missing from the saved {what}")
    digest = verify_sha256(weights, payload.get("weights_sha256"), directory / DESCRIPTOR)
    return weights, digest


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
