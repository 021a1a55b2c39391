"""This process's place in a ``torchrun`` / ``accelerate launch`` run, and rank sharding.

Accelerate forms a CPU (gloo) process group only when asked for the CPU: on a host without an
accelerator, ``PartialState()`` under ``torchrun`` finds no device backend and reports one
process, so N launched copies of a job run as N independent single-process runs that overwrite
each other's files. :func:`process_state` keeps Accelerate's own detection (NCCL on GPUs,
``accelerate launch --cpu``) and falls back to gloo when the launcher started several processes
and Accelerate found no device group for them. Every job calls it before anything else reads
the process state, so the first (shared, unchangeable) state is the right one.
:func:`resolve_device` gives each launched rank its own GPU for jobs that place models
themselves (inference, evaluation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def launched_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 when not launched)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def process_state(cpu: bool = False) -> Any:
    """Accelerate's ``PartialState`` of this run, one process group across every launched rank.

    Parameters
    ----------
    cpu
        Train on the CPU even where a GPU is present (``accelerate launch --cpu`` sets it too).
    """
    from accelerate import PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import parse_flag_from_env

    cpu = cpu or parse_flag_from_env("ACCELERATE_USE_CPU")
    state = PartialState(cpu=cpu)
    if state.num_processes > 1:
        return state
    if launched_world_size() > 1 or (cpu and state.device.type != "cpu"):
        # Launched, but Accelerate saw no device group (a CPU host): join the gloo group; or
        # one process that used a GPU before (a notebook, a test session) now asks for the CPU.
        AcceleratorState._reset_state(reset_partial_state=True)
        state = PartialState(cpu=True)
    return state


def shard(items: Sequence[T], state: Any | None = None) -> list[T]:
    """This rank's share of ``items``: every ``num_processes``-th one from its index.

    The shares of all ranks are disjoint and together hold every item once; merging them back
    in the original order is :func:`unshard`.
    """
    state = state or process_state()
    return list(items[state.process_index :: state.num_processes])


def unshard(shares: Sequence[Sequence[T]]) -> list[T]:
    """Interleave the per-rank shares of :func:`shard` back into the original order."""
    merged: list[T] = []
    longest = max((len(s) for s in shares), default=0)
    for i in range(longest):
        merged.extend(share[i] for share in shares if i < len(share))
    return merged


def gather_shares(share: list[T], state: Any | None = None) -> list[list[T]] | None:
    """Every rank's ``share`` (picklable objects) on the main process; ``None`` elsewhere."""
    state = state or process_state()
    if state.num_processes == 1:
        return [share]
    import torch.distributed as dist

    shares: list[Any] = [None] * state.num_processes
    dist.gather_object(share, shares if state.is_main_process else None, dst=0)
    return shares if state.is_main_process else None


def from_main_process(value: T, state: Any | None = None) -> T:
    """The main process's ``value`` on every rank (``value`` itself when not distributed)."""
    state = state or process_state()
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value if state.is_main_process else None], from_process=0)[0]


def on_main_process(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the main process only; every rank returns its result.

    For jobs that write one set of files and gain nothing from several ranks (evaluation):
    under ``torchrun`` the other ranks wait for the main one instead of racing it on the
    same files.
    """
    state = process_state()
    result = fn(*args, **kwargs) if state.is_main_process else None
    return from_main_process(result, state)  # type: ignore[arg-type]


def pick_device(name: str, cuda_count: int, environ: Mapping[str, str]) -> torch.device:
    """The device ``name`` means for this process, given ``cuda_count`` visible GPUs.

    ``auto`` is CUDA when a GPU is visible, else the CPU. Under ``torchrun`` / ``accelerate
    launch`` (``LOCAL_RANK`` set) a bare ``cuda`` is this rank's own GPU, ``cuda:LOCAL_RANK``,
    so N ranks on one host do not all load their model onto GPU 0. An explicit index
    (``cuda:1``) and any other name are passed to ``torch.device`` unchanged.
    """
    import torch

    if name == "auto":
        name = "cuda" if cuda_count > 0 else "cpu"
    if name != "cuda" or "LOCAL_RANK" not in environ:
        return torch.device(name)
    rank = int(environ["LOCAL_RANK"])
    if rank >= cuda_count:
        raise ValueError(
            f"device {name}: local rank {rank} needs GPU {rank}, but {cuda_count} are visible"
        )
    return torch.device("cuda", rank)


def resolve_device(name: str) -> torch.device:
    """:func:`pick_device` for this process's GPUs and launcher environment."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return pick_device(name, count, os.environ)
