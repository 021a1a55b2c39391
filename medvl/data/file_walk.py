"""Which paths an ingest reads: the walk below a folder, and the files DICOMDIRs reference.

Every entry of the walk, judged from ``lstat`` alone, is either a regular file to read (once,
by real path) or a failure named for what it is: a dangling link, a link to a folder (not
followed), a second link to a file already read, a named pipe (never opened: reading one
blocks forever), a device, a socket. A DICOMDIR adds the files it references (once each).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Outcome = tuple[str, Any]
"""What reading one path gives: ("image", record dict), ("dicomdir", [paths]) or
("failure", reason)."""
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


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


def walk_files(root: Path, skip: Path | None) -> tuple[list[str], dict[str, Outcome]]:
    """Regular files below ``root`` (once each by real path) and every other entry's failure.

    Symlinked folders are not followed; each non-regular entry becomes a failure outcome.
    """
    seen: set[str] = set()
    files_out: list[str] = []
    refused: dict[str, Outcome] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()
        if skip is not None:
            dirs[:] = [d for d in dirs if (here / d).resolve() != skip]
        linked = [d for d in dirs if (here / d).is_symlink()]
        for name in sorted(files) + linked:
            full = here / name
            problem = not_a_file(full)
            real = os.path.realpath(full)
            if problem is None and real in seen:
                problem = "a second link to a file this ingest already reads; read once"
            if problem is not None:
                refused[os.path.abspath(full)] = ("failure", problem)
                continue
            seen.add(real)
            files_out.append(os.path.abspath(full))
    return files_out, refused


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


def new_references(outcomes: dict[str, Outcome], just_read: Sequence[str]) -> list[str]:
    """Paths referenced by DICOMDIRs read in the last pass that the walk has not seen.

    A referenced path that does not exist is recorded as a failure here.
    """
    seen = {os.path.realpath(p) for p in outcomes}
    new: set[str] = set()
    for path in just_read:
        kind, payload = outcomes[path]
        if kind != "dicomdir":
            continue
        for ref in payload:
            real = os.path.realpath(ref)
            if real in seen or real in new:
                continue
            if not os.path.isfile(real):
                outcomes[ref] = ("failure", "referenced by a DICOMDIR but the file does not exist")
                seen.add(real)
                continue
            new.add(real)
    return sorted(new)
