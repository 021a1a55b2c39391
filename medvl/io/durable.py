"""Files that survive a kill or a full disk: torn JSONL lines, disk-full errors, temp cleanup.

A job killed mid-write (``kill -9``, a power cut, a full disk) leaves at most a half-written
last line in an append-only JSONL log; :func:`read_jsonl` drops it with a warning naming the
file and rewrites the file without it, so the next run continues instead of failing on it. A
line broken anywhere else is real damage and an error naming the file and the line.

A full disk surfaces as ``OSError(ENOSPC)`` from Python, as a ``RuntimeError`` ("unexpected
pos") from ``torch.save``, as a ``SafetensorError`` ("os error 28") from safetensors and as
``sqlite3.OperationalError`` (``SQLITE_FULL``) from SQLite;
:func:`raise_if_disk_full` turns each into one :class:`DiskFullError` that names the folder and
the space the write needed, after the caller has removed its temporary files.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXTS = ("no space left on device", "os error 28", "disk quota exceeded")
_SHORT_WRITE = "unexpected pos"  # torch.save's zip writer when a write came up short


def format_bytes(count: float) -> str:
    """``count`` bytes as a short human-readable size (``"12.3 MB"``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


class DiskFullError(OSError):
    """A write failed because the disk (or quota) holding ``folder`` is full."""

    def __init__(self, folder: Path, what: str, needed: int | None) -> None:
        self.folder = Path(folder)
        free = shutil.disk_usage(_existing(self.folder)).free
        need = f"about {format_bytes(needed)} needed" if needed else "more needed"
        super().__init__(
            errno.ENOSPC,
            f"{self.folder}: disk full while writing {what} ({format_bytes(free)} free, {need}); "
            "free space there or write elsewhere",
        )

    def __str__(self) -> str:
        return str(self.strerror)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_disk_full(err: BaseException, folder: Path, needed: int | None = None) -> bool:
    """Whether ``err`` (already raised by a write into ``folder``) means the disk is full.

    An errno (or SQLite's error code) says so directly; torch and safetensors lose it, so their
    message is read, and a ``torch.save`` failure counts when ``folder`` now has less than
    ``needed`` bytes free.
    """
    if isinstance(err, DiskFullError):
        return True
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
        return True
    if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    text = str(err).lower()
    if any(t in text for t in _FULL_TEXTS):
        return True
    if _SHORT_WRITE in text:
        return needed is None or shutil.disk_usage(_existing(Path(folder))).free < needed
    return False


def raise_if_disk_full(err: BaseException, folder: Path, what: str, needed: int | None) -> None:
    """Raise :class:`DiskFullError` from ``err`` when it means a full disk; else return."""
    if isinstance(err, DiskFullError):
        raise err
    if is_disk_full(err, folder, needed):
        raise DiskFullError(folder, what, needed) from err


def remove_quietly(*paths: Path) -> None:
    """Delete files or folders that a failed write left behind (missing ones are fine)."""
    for path in paths:
        path = Path(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def disk_full_as_error(
    folder: Path, what: str, temps: Iterable[Path] = (), needed: int | None = None
) -> Iterator[None]:
    """Writes inside this block that fail remove ``temps``; a full disk is a DiskFullError."""
    try:
        yield
    except Exception as err:
        remove_quietly(*temps)
        raise_if_disk_full(err, folder, what, needed)
        raise


def write_text_atomic(path: Path, text: str, what: str | None = None) -> Path:
    """Write ``text`` to ``path`` through ``path.tmp`` + fsync + rename.

    A crash leaves the old file (or none); a full disk raises :class:`DiskFullError` and leaves
    no ``.tmp`` behind.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as err:
        remove_quietly(tmp)
        raise_if_disk_full(err, path.parent, what or path.name, len(text.encode()))
        raise
    return path


def write_jsonl_atomic(path: Path, rows: Iterable[Any], what: str | None = None) -> Path:
    """Write ``rows`` (JSON-serialisable) one per line with :func:`write_text_atomic`."""
    return write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows), what)


def append_jsonl(path: Path, row: Any) -> None:
    """Append one JSON line; on a full disk the file is cut back to its old length first."""
    path = Path(path)
    line = json.dumps(row) + "\n"
    size = path.stat().st_size if path.exists() else 0
    try:
        with path.open("a") as fh:
            fh.write(line)
            fh.flush()
    except OSError as err:
        if path.exists():
            os.truncate(path, size)
        raise_if_disk_full(err, path.parent, path.name, len(line.encode()))
        raise


def read_jsonl(path: Path, repair: bool = True) -> list[Any]:
    """Every row of a JSONL file, tolerating a torn last line.

    A last line that does not parse (a write cut short) is dropped with a warning naming the
    file and, with ``repair``, removed from the file. A bad line before the last is damage:
    ``ValueError`` naming the file and the line.
    """
    path = Path(path)
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    rows: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines) and any(rest.strip() for rest in lines[number:]):
                raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
            logger.warning(
                "%s: last line is incomplete (a write was cut short); dropped it%s",
                path,
                " and repaired the file" if repair else "",
            )
            if repair:
                write_jsonl_atomic(path, rows)
    return rows
