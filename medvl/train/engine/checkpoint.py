"""Atomic training checkpoints: weights, optimizer, scheduler, scaler, RNG and data position.

Layout of one checkpoint directory (``<output_dir>/checkpoints/step-00000400/``)::

    model.safetensors     weights of the unwrapped model (shared tensors handled by safetensors)
    optimizer.pt          optimizer + scheduler + grad-scaler state (tensors and numbers only,
                          read back with ``torch.load(weights_only=True)``; never pickled objects)
    rng-<rank>.pt         python / numpy / torch / cuda RNG states of each process
    state.json            step, epoch, batches consumed in the epoch, best metric, world size,
                          and ``files``: the SHA-256 of every other file of the checkpoint

Every checkpoint is written into ``.tmp-<name>`` and renamed into place only when complete, so
a crash mid-write never leaves a directory that looks finished; ``state.json`` is written last
and a directory without it is ignored. A checkpoint damaged later (a truncated file, a bad
``state.json``) is found by :func:`checkpoint_problem`, and resume skips it for the newest
intact one. A full disk is a :class:`~medvl.io.durable.DiskFullError` naming the folder and
the space needed; the temporary folder is removed and the previous checkpoint stays.

All processes write their own RNG file, so the output directory must be on storage every rank
sees (the usual shared filesystem on a cluster). Model and optimizer states come from the main
process, which suits DDP (replicated states); sharded optimizers (FSDP, DeepSpeed ZeRO) are
outside this engine.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from medvl.io.durable import raise_if_disk_full, remove_quietly
from medvl.models.hub import sha256_file

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d{8})$")
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.pt"
STATE_FILE = "state.json"


class CheckpointError(ValueError):
    """A checkpoint is incomplete or damaged (message: its folder and what is wrong)."""


def step_dir_name(step: int) -> str:
    """Directory name of the checkpoint taken after optimizer step ``step``."""
    return f"step-{step:08d}"


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as tensors and numbers (safe for ``weights_only`` loading)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors inside nested dicts/lists (what a checkpoint write needs)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


class CheckpointManager:
    """Writes, lists, prunes and reads checkpoints under ``root``.

    Parameters
    ----------
    root
        Folder holding ``step-XXXXXXXX`` directories and ``best``.
    keep_last
        Step checkpoints kept after each save (older ones are deleted; ``best`` is separate).
    is_main
        Whether this process writes shared files (model, optimizer, state) and renames.
    rank
        This process's index, naming its RNG file.
    barrier
        Synchronises all processes (``accelerator.wait_for_everyone``); a no-op when alone.
    """

    def __init__(
        self,
        root: Path,
        keep_last: int,
        is_main: bool = True,
        rank: int = 0,
        barrier: Callable[[], None] = lambda: None,
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last
        self.is_main = is_main
        self.rank = rank
        self.barrier = barrier

    def step_checkpoints(self) -> list[Path]:
        """Complete step checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), d)
            for d in self.root.iterdir()
            if (m := STEP_DIR.match(d.name)) and (d / STATE_FILE).is_file()
        ]
        return [d for _, d in sorted(found)]

    def latest(self) -> Path | None:
        """The newest complete step checkpoint, or ``None``."""
        found = self.step_checkpoints()
        return found[-1] if found else None

    def clear_temporary(self) -> None:
        """Remove the ``.tmp-*`` folders of saves that a kill interrupted."""
        if self.is_main and self.root.is_dir():
            for stale in self.root.glob(".tmp-*"):
                remove_quietly(stale)

    def save(
        self,
        name: str,
        model: nn.Module,
        state: dict[str, Any],
        optim_state: dict[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint ``name`` atomically on every process and return its final path.

        ``optim_state`` (optimizer/scheduler/scaler state dicts) and the RNG files are written
        only for resumable checkpoints; ``best`` keeps weights and state alone.
        """
        final = self.root / name
        tmp = self.root / f".tmp-{name}"
        try:
            self._write(tmp, model, state, optim_state)
        except Exception as err:
            remove_quietly(tmp)
            needed = _tensor_bytes(model.state_dict()) + _tensor_bytes(optim_state)
            raise_if_disk_full(err, self.root, f"checkpoint {name}", needed)
            raise
        if self.is_main:
            old = self.root / f".old-{name}"
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
            if STEP_DIR.match(name):
                self.prune()
        self.barrier()
        return final

    def _write(
        self,
        tmp: Path,
        model: nn.Module,
        state: dict[str, Any],
        optim_state: dict[str, Any] | None,
    ) -> None:
        """Write every file of a checkpoint into ``tmp``; ``state.json`` (with hashes) last."""
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        if optim_state is not None:
            rng_file = tmp / f"rng-{self.rank}.pt"
            torch.save(capture_rng(), rng_file)
            _fsync(rng_file)
        if self.is_main:
            save_model(model, str(tmp / MODEL_FILE), metadata={"step": str(state.get("step", ""))})
            _fsync(tmp / MODEL_FILE)
            if optim_state is not None:
                torch.save(optim_state, tmp / OPTIM_FILE)
                _fsync(tmp / OPTIM_FILE)
        self.barrier()
        if self.is_main:
            files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
            (tmp / STATE_FILE).write_text(json.dumps({**state, "files": files}, indent=1))
            _fsync(tmp / STATE_FILE)

    def clear(self) -> None:
        """Delete every checkpoint under ``root`` (main process; all ranks wait)."""
        if self.is_main and self.root.is_dir():
            stale = [*self.step_checkpoints(), self.root / "best"]
            if any(p.exists() for p in stale):
                logger.warning("%s: removing checkpoints of an earlier run", self.root)
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
        self.barrier()

    def prune(self) -> None:
        """Delete all but the newest ``keep_last`` step checkpoints."""
        for stale in self.step_checkpoints()[: -self.keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
            logger.debug("removed old checkpoint %s", stale.name)


def read_state(path: Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint directory.

    Raises
    ------
    FileNotFoundError
        The checkpoint has no ``state.json`` (its save never finished).
    CheckpointError
        ``state.json`` is not a JSON object.
    """
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step", 0), int):
        raise CheckpointError(f"{file}: not a checkpoint state (expected an object with a step)")
    return state


def checkpoint_problem(path: Path) -> str | None:
    """Why checkpoint ``path`` cannot be trusted, or ``None`` when it is intact.

    Checks that ``state.json`` parses and that every file it records still has its SHA-256
    (checkpoints written before hashes were recorded pass on ``state.json`` alone).
    """
    try:
        state = read_state(path)
    except (FileNotFoundError, CheckpointError) as err:
        return str(err)
    for name, digest in (state.get("files") or {}).items():
        file = Path(path) / name
        if not file.is_file():
            return f"{file}: missing"
        if sha256_file(file) != digest:
            return f"{file}: damaged (its SHA-256 differs from the one {STATE_FILE} records)"
    return None


def load_model_weights(model: nn.Module, path: Path, strict: bool = True) -> None:
    """Load a checkpoint's ``model.safetensors`` into ``model`` (any checkpoint, ``best`` too)."""
    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}: checkpoint has no {MODEL_FILE}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        missing, unexpected = load_model(model, str(file), strict=strict, device=str(device))
    except Exception as err:  # SafetensorError (truncated), RuntimeError (shape mismatch)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{file}: cannot be read into the model ({reason})") from None
    if missing or unexpected:
        logger.warning("%s: %d missing and %d unexpected keys", file, len(missing), len(unexpected))


def load_optim_state(path: Path) -> dict[str, Any]:
    """Optimizer/scheduler/scaler states of a resumable checkpoint (tensors and numbers only)."""
    file = Path(path) / OPTIM_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}: checkpoint has no {OPTIM_FILE}; it cannot be resumed")
    return _load_tensors(file)


def _load_tensors(file: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``; a truncated or foreign file is a CheckpointError."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # RuntimeError (truncated zip), UnpicklingError (refused pickle)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{file}: cannot be read ({reason})") from None


def load_rng(path: Path, rank: int) -> dict[str, Any] | None:
    """RNG states saved by process ``rank``, or ``None`` when that rank did not exist then."""
    file = Path(path) / f"rng-{rank}.pt"
    if not file.is_file():
        return None
    return _load_tensors(file)
