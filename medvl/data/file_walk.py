"""Which paths an ingest reads: the walk below a folder, and the files DICOMDIRs reference.

Every entry of the walk, judged from ``lstat`` alone, is either a regular file to read (once,
by real path) or a failure named for what it is: a dangling link, a link to a folder (not
followed), a second link to a file already read, a named pipe (never opened: reading one
blocks forever), a device, a socket. A DICOMDIR adds the files it references (once each).
Both yield entries one at a time and keep no list: the real paths met so far live in the
caller's :class:`PathsMet` (the ingest's on-disk store), so memory does not grow with the corpus.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Outcome = tuple[str, Any]
"""What reading one path gives: ("image", record dict), ("dicomdir", [paths]) or
("failure", reason)."""
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


class PathsMet(Protocol):
    """The real paths an ingest has met, kept by the caller (on disk for large corpora)."""

    def claim(self, real: str) -> bool:
        """Mark ``real`` as read; ``False`` when a file with this real path is already read."""

    def note(self, real: str) -> None:
        """Remember ``real`` (an entry that is not read) without claiming it."""

    def met(self, real: str) -> bool:
        """Whether ``real`` was claimed or noted before."""


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is not a regular file to read, from ``lstat``/``stat`` only; else ``None``."""
    try:
        mode = path.lstat().st_mode
    except OSError as err:
        return f"cannot be examined ({err.strerror or type(err).__name__})"
    if stat.S_ISLNK(mode):
        try:
            mode = path.stat().st_mode
        except OSError:
            return "symbolic link to a file that does not exist (dangling link)"
        if stat.S_ISDIR(mode):
            return "symbolic link to a folder; linked folders are not followed"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a regular file; not opened"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file, not a regular file; not opened"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file; not opened"
    return "not a regular file; not opened"


def walk_files(
    root: Path, skip: Collection[Path], met: PathsMet
) -> Iterator[tuple[str, str | None]]:
    """Every entry below ``root`` in walk order: ``(path, None)`` to read or ``(path, reason)``.

    Folders in ``skip`` and symlinked folders are not entered; a regular file is read once by
    real path, so a second link to it is refused (``met`` remembers the real paths).
    """
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()
        dirs[:] = [d for d in dirs if (here / d).resolve() not in skip]
        linked = [d for d in dirs if (here / d).is_symlink()]
        for name in sorted(files) + linked:
            full = here / name
            problem = not_a_file(full)
            real = os.path.realpath(full)
            if problem is None and not met.claim(real):
                problem = "a second link to a file this ingest already reads; read once"
            elif problem is not None:
                met.note(real)
            yield os.path.abspath(full), problem


def dicomdir_entries(path: str) -> list[str] | None:
    """Absolute paths a DICOMDIR references, or ``None`` when ``path`` is not a DICOMDIR.

    Read from the directory records' ReferencedFileID (relative to the DICOMDIR's folder), so
    references to missing files are kept and reported. Media written on other systems often
    store upper-case IDs for lower-case names; a case-insensitive match is used then.
    """
    import pydicom

    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:
        return None
    if str(meta.get("MediaStorageSOPClassUID", "")) != MEDIA_STORAGE_DIRECTORY:
        return None
    try:
        records = pydicom.dcmread(path).get("DirectoryRecordSequence") or []
        file_ids = [r.ReferencedFileID for r in records if r.get("ReferencedFileID")]
    except Exception as err:
        logger.warning("%s: DICOMDIR could not be parsed (%s); relying on the walk", path, err)
        return []
    base = os.path.dirname(os.path.abspath(path))
    parts = ([str(f)] if isinstance(f, str) else [str(c) for c in f] for f in file_ids)
    return [_resolve_file_id(base, components) for components in parts]


def _resolve_file_id(base: str, components: list[str]) -> str:
    """Join a ReferencedFileID onto ``base``, matching each component case-insensitively."""
    current = base
    for component in components:
        exact = os.path.join(current, component)
        if not os.path.exists(exact) and os.path.isdir(current):
            matches = [n for n in os.listdir(current) if n.lower() == component.lower()]
            exact = os.path.join(current, matches[0]) if matches else exact
        current = exact
    return current


def new_references(references: Iterable[str], met: PathsMet) -> Iterator[tuple[str, str | None]]:
    """The files DICOMDIRs reference that the ingest has not met, as ``walk_files`` gives them.

    ``(real path, None)`` for a file to read; ``(reference, reason)`` for one that does not exist.
    """
    for ref in references:
        real = os.path.realpath(ref)
        if met.met(real):
            continue
        if not os.path.isfile(real):
            met.note(real)
            yield ref, "referenced by a DICOMDIR but the file does not exist"
            continue
        met.claim(real)
        yield real, None
