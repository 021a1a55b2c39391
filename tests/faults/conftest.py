"""Fixtures for the fault-injection tests: a small real disk that fills up, one-thread torch."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on a shared machine run faster single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path | None]]:
    """``make(bytes)``: a folder on a tmpfs of that size, or ``None`` when mounting is refused.

    Running as root (the CI container) mounts a real tmpfs, so the writes hit a real ENOSPC in
    torch, safetensors and Python alike; elsewhere the tests monkeypatch a failing write.
    """
    mounted: list[Path] = []

    def make(size: int) -> Path | None:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        )
        if done.returncode != 0:
            return None
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
