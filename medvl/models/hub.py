"""Reading weights safely and recording what was read.

Weights come from local paths first (a hub name only where the user has network), are read as
safetensors or with ``torch.load(weights_only=True)`` (never a pickle that can run code), and
every source gets a SHA-256 so a saved model or a result can name exactly what it started from.

Every saved medvl model (aligner, SAM, findings classifier) is a directory with one JSON
descriptor (``config.json``, written by :func:`write_descriptor`, read by
:func:`read_saved_json`) that records its weights file and ``weights_sha256``;
:func:`verified_weights` refuses weights that no longer match with the one
:class:`ChecksumError`. ``weights_sha256`` is :func:`sha256_tensors`: a hash of the tensors
(names, dtypes, shapes, bytes), not of the file, so the same weights saved twice have the same
identity whatever the file's header holds. Models saved before recorded the file's SHA-256;
they still load, and keep that value as their identity.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medvl.io.durable import raise_if_disk_full, remove_quietly

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


def sha256_tensors(path: str | Path) -> str:
    """Hex SHA-256 of a safetensors file's tensors: each name, dtype, shape and bytes, by name.

    Read from the file's header and data without torch; metadata and layout do not count.

    Raises
    ------
    ValueError
        The file is not a complete safetensors file (truncated, or another format).
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (size,)
        if 8 + length > size:
            raise ValueError(f"{path}: not a complete safetensors file (header cut short)")
        try:
            header = json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path}: not a safetensors file (unreadable header)") from None
        if not isinstance(header, dict):
            raise ValueError(f"{path}: not a safetensors file (unreadable header)")
        digest = hashlib.sha256()
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            begin, end = info["data_offsets"]
            if 8 + length + end > size:
                raise ValueError(f"{path}: truncated (tensor {name!r} ends past the file)")
            digest.update(f"{name}\0{info['dtype']}\0{info['shape']}\0".encode())
            fh.seek(8 + length + begin)
            remaining = end - begin
            while remaining:
                chunk = fh.read(min(_CHUNK, remaining))
                digest.update(chunk)
                remaining -= len(chunk)
    return digest.hexdigest()


def save_state_atomic(module: nn.Module, path: Path, producer: str) -> str:
    """Write ``module``'s state dict to ``path`` as safetensors (temp file + rename).

    Returns :func:`sha256_tensors` of the file, the identity recorded beside every saved model.
    A full disk raises :class:`~medvl.io.durable.DiskFullError` and leaves no temp file.
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(state, str(tmp), metadata={"format": "pt", "producer": producer})
        tmp.replace(path)
    except Exception as err:  # SafetensorError carries the OS error only as text
        remove_quietly(tmp)
        needed = sum(v.numel() * v.element_size() for v in state.values())
        raise_if_disk_full(err, path.parent, path.name, needed)
        raise
    return sha256_tensors(path)


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
    """Identity of weights ``path``, checked against the value ``descriptor`` records for it.

    The record is :func:`sha256_tensors` (safetensors saved by this medvl) or, for models saved
    before, the file's SHA-256; the matching one is returned.

    Raises
    ------
    ChecksumError
        Neither hash matches ``recorded`` (changed or corrupted after saving).
    """
    if path.suffix == ".safetensors":
        try:
            if sha256_tensors(path) == recorded:
                return recorded
        except ValueError:
            pass  # truncated: the file hash below differs too and names the problem
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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a saved {what} descriptor (expected a JSON object)")
    payload = SavedDescriptor(path, what, payload)
    if payload.get("format") != fmt:
        raise ValueError(f"{path}: format is {payload.get('format')!r}, expected {fmt!r}")
    if payload.get("format_version", 0) > version:
        raise ValueError(
            f"{path}: format_version {payload['format_version']} is newer than this medvl "
            f"understands ({version}); upgrade medvl"
        )
    return payload


def required_part(directory: str | Path, name: str, what: str) -> Path:
    """``directory/name``, a part every saved ``what`` holds (a tokenizer folder, a head file).

    A missing part is an error, never a silent fall-back to a packaged default that would
    tokenise or predict differently from the saved model.
    """
    path = Path(directory) / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from the saved {what}; the folder is incomplete")
    return path


def read_json_object(path: str | Path, what: str, required: tuple[str, ...] = ()) -> dict:
    """A JSON object file of a saved ``what`` (an adapter config, a head descriptor).

    Unparseable text, another JSON type or a missing ``required`` key is a ``ValueError``
    naming the file, so a damaged folder reads as one line, not a library's ``KeyError``.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the saved {what} is damaged") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a JSON object; the saved {what} is damaged")
    missing = [key for key in required if key not in payload]
    if missing:
        raise ValueError(f"{path}: no {missing[0]!r} entry; the saved {what} is incomplete")
    return payload


@contextmanager
def foreign_read(path: str | Path, what: str) -> Iterator[None]:
    """Errors of another library reading ``path`` become one ``ValueError`` naming it.

    transformers, safetensors and torch raise their own types (``SafetensorError``, a
    refused-pickle ``UnpicklingError``, config validation errors) that say what failed but
    not in which folder; medvl's own ``ValueError``/``OSError`` pass through unchanged.
    """
    try:
        yield
    except (ValueError, OSError):
        raise
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
        raise ValueError(f"{path}: cannot be read as {what} ({reason[:300]})") from err


class SavedDescriptor(dict):
    """A descriptor's mapping; a missing entry is a ``ValueError`` naming the file and key.

    Loaders index it directly (``payload["aligner"]``); a damaged or hand-edited file then
    reports which entry it lacks instead of a bare ``KeyError``.
    """

    def __init__(self, path: Path, what: str, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.path, self.what = path, what

    def __missing__(self, key: str) -> Any:
        raise ValueError(f"{self.path}: no {key!r} entry; the saved {self.what} is incomplete")


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
