"""Batch ingest: walk a folder of DICOM files and write an image manifest plus a failure list.

``ingest_directory(root, out_dir)`` looks at every file below ``root`` (any depth, any name, no
extension needed), reads each header in a pool of worker processes with
:func:`medvl.io.dicom.read_dicom` (``decode=False`` unless ``decode_check``) and writes

* ``images.jsonl``: one :class:`~medvl.data.records.ImageRecord` per usable image, sorted by path;
* ``failures.jsonl``: one :class:`~medvl.data.records.Failure` (path, reason) per unusable file.

Every file ends up in exactly one of the two, so a corpus with bad files always completes and the
counts add up. Files are judged by content, never by name: a file without the ``DICM`` marker is
still read if pydicom finds an image header in it, and non-DICOM files are recorded as failures
with the reason. A ``DICOMDIR`` is an index, not an image: the files it references are added to
the walk (once each, by resolved path) and a referenced file that is missing becomes a failure.

Records carry no PHI: UIDs are hashed, ``patient_key`` is a salted hash of PatientID (the hashed
StudyInstanceUID when PatientID is empty), and ``content_hash`` is the sha256 of the file bytes,
which keys the tensor cache. Worker processes are started with ``spawn`` (safe when torch
threads are running); a file that crashes its worker is retried alone and then recorded.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medvl.data.records import Failure, ImageRecord, image_record, write_manifest

__all__ = [
    "FAILURES_FILE",
    "IMAGES_FILE",
    "IngestConfig",
    "IngestResult",
    "file_sha256",
    "ingest_directory",
    "inspect_file",
    "run_chunked",
]

logger = logging.getLogger(__name__)

IMAGES_FILE = "images.jsonl"
FAILURES_FILE = "failures.jsonl"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
CRASH_REASON = "reading this file crashed the worker process (decoder fault); file skipped"

Outcome = tuple[str, Any]
"""What a worker returns for one path: ("image", record dict), ("dicomdir", [paths]) or
("failure", reason)."""


@dataclass
class IngestConfig:
    """Settings of the ``medvl ingest`` job (the salt comes from ``MEDVL_SALT``, never a file)."""

    workers: int = 2
    decode_check: bool = False
    chunk_size: int = 0


@dataclass
class IngestResult:
    """What an ingest wrote and counted."""

    manifest: Path
    failures_file: Path
    records: list[ImageRecord] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    files_seen: int = 0
    dicomdirs: int = 0
    duplicates: int = 0

    def summary(self) -> dict[str, int]:
        """Counts for logs and the CLI: files seen, images, failures, DICOMDIRs, duplicates."""
        return {
            "files_seen": self.files_seen,
            "images": len(self.records),
            "failures": len(self.failures),
            "dicomdirs": self.dicomdirs,
            "duplicate_contents": self.duplicates,
        }


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """sha256 of a file's bytes as hex: the identity of an image for caches and de-duplication."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def patient_key(patient_id: str, salt: str) -> str:
    """A salted pseudonym of PatientID (16 hex); ``""`` when the file holds none.

    Medical record numbers are short and guessable, so an unsalted hash can be reversed by
    trying them all; pass a secret salt (``MEDVL_SALT``) for manifests that leave the site.
    """
    from medvl.io.dicom import hash_uid

    pid = str(patient_id or "").strip()
    return hash_uid(pid, salt) if pid else ""


def inspect_file(path: str, salt: str = "", decode_check: bool = False) -> Outcome:
    """Classify one file: an image record, a DICOMDIR's referenced paths, or a failure reason.

    Runs in worker processes; returns plain picklable values and never raises for bad files.
    """
    import pydicom

    from medvl.io.dicom import DicomReadError, read_dicom

    try:
        image = read_dicom(path, decode=decode_check)
    except DicomReadError as err:
        referenced = _dicomdir_entries(path)
        return ("dicomdir", referenced) if referenced is not None else ("failure", err.reason)
    try:
        ids = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["PatientID"], force=True
        )
        content_hash = file_sha256(path)
    except OSError as err:
        return ("failure", f"file could not be read a second time ({type(err).__name__})")
    except Exception as err:  # header was valid a moment ago; the file changed under us
        return ("failure", f"header became unreadable while ingesting ({type(err).__name__})")
    pseudonym = patient_key(str(ids.get("PatientID", "") or ""), salt)
    record = image_record(
        image, path, image.sop_uid_hash or content_hash[:16],
        pseudonym or image.study_uid_hash, content_hash,
    )  # fmt: skip
    return ("image", asdict(record))


def _dicomdir_entries(path: str) -> list[str] | None:
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


def _inspect_chunk(paths: Sequence[str], salt: str, decode_check: bool) -> list[Outcome]:
    return [inspect_file(p, salt, decode_check) for p in paths]


def run_chunked(
    fn: Callable[..., list[Outcome]],
    paths: Sequence[str],
    args: tuple,
    *,
    workers: int,
    chunk_size: int,
    on_done: Callable[[int], None] | None = None,
) -> dict[str, Outcome]:
    """Apply ``fn(chunk, *args)`` to chunks of ``paths`` in ``workers`` processes.

    ``workers <= 1`` runs in this process. When a worker dies (a decoder segfault), the chunks it
    broke are retried one path per task in a fresh pool, and a path that still kills its worker
    when run alone is recorded as ``("failure", CRASH_REASON)``; the rest of the corpus goes on.
    """
    done: dict[str, Outcome] = {}
    if workers <= 1:
        for start in range(0, len(paths), chunk_size):
            chunk = paths[start : start + chunk_size]
            done.update(zip(chunk, fn(chunk, *args), strict=True))
            if on_done:
                on_done(len(chunk))
        return done
    suspects = _pool_pass(fn, paths, args, workers, chunk_size, done, on_done)
    if suspects:
        logger.warning("a worker process died; retrying %d files one at a time", len(suspects))
    while suspects:
        left = _pool_pass(fn, suspects, args, workers, 1, done, on_done)
        if len(left) == len(suspects):  # no file finished before the crash: isolate the first
            if _pool_pass(fn, left[:1], args, 1, 1, done, on_done):
                done[left[0]] = ("failure", CRASH_REASON)
                if on_done:
                    on_done(1)
            left = left[1:]
        suspects = [p for p in left if p not in done]
    return done


def _pool_pass(
    fn: Callable[..., list[Outcome]],
    paths: Sequence[str],
    args: tuple,
    workers: int,
    chunk_size: int,
    done: dict[str, Outcome],
    on_done: Callable[[int], None] | None,
) -> list[str]:
    """One pool over ``paths``; fills ``done`` and returns the paths whose chunk broke the pool."""
    chunks = [list(paths[i : i + chunk_size]) for i in range(0, len(paths), chunk_size)]
    broken: list[str] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
        futures: list[tuple[list[str], Future]] = [(c, pool.submit(fn, c, *args)) for c in chunks]
        for chunk, future in futures:
            try:
                outcomes = future.result()
            except BrokenProcessPool:
                broken.extend(chunk)
                continue
            done.update(zip(chunk, outcomes, strict=True))
            if on_done:
                on_done(len(chunk))
    return broken


def _walk(root: Path, skip: Path | None) -> Iterator[str]:
    """Each regular file below ``root`` once (by real path); symlinked folders are not followed."""
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()
        if skip is not None:
            dirs[:] = [d for d in dirs if (here / d).resolve() != skip]
        for name in sorted(files):
            full = here / name
            real = os.path.realpath(full)
            if full.is_file() and real not in seen:
                seen.add(real)
                yield os.path.abspath(full)


def _chunk_size(n: int, workers: int, requested: int) -> int:
    if requested > 0:
        return requested
    return max(1, min(64, n // max(1, workers * 8)))


def ingest_directory(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    workers: int = 2,
    decode_check: bool = False,
    salt: str = "",
    chunk_size: int = 0,
    progress: bool = False,
) -> IngestResult:
    """Read every file below ``root`` and write ``images.jsonl`` and ``failures.jsonl``.

    Parameters
    ----------
    root
        Folder to walk. ``out_dir`` is skipped when it lies inside ``root``.
    out_dir
        Where the manifests go (created if needed).
    workers
        Worker processes for header reading; 1 reads in this process.
    decode_check
        Also decode the pixels, so files whose header is fine but whose pixel data cannot be
        decoded are failures now rather than during training (slower).
    salt
        Secret mixed into ``patient_key`` hashes.
    chunk_size
        Files per worker task; 0 picks one from the corpus size.
    progress
        Show a tqdm progress bar (the CLI turns it on).

    Returns
    -------
    IngestResult
        Records and failures in path order (identical for any ``workers``), and the counts.
    """
    from tqdm.auto import tqdm

    root_path, out_path = Path(root).resolve(), Path(out_dir).resolve()
    if not root_path.is_dir():
        raise FileNotFoundError(f"{root_path}: not a folder")
    skip = out_path if out_path != root_path else None
    paths = sorted(_walk(root_path, skip))
    workers = max(1, int(workers))
    args = (salt, decode_check)
    outcomes: dict[str, Outcome] = {}
    with tqdm(total=len(paths), unit="file", desc="ingest", disable=not progress) as bar:
        pending = paths
        while pending:
            size = _chunk_size(len(pending), workers, chunk_size)
            outcomes.update(
                run_chunked(
                    _inspect_chunk,
                    pending,
                    args,
                    workers=workers,
                    chunk_size=size,
                    on_done=bar.update,
                )
            )
            pending = _new_references(outcomes, pending)
            bar.total += len(pending)
    result = _collect(outcomes, out_path)
    logger.info(
        "ingest %s: %d files, %d images, %d failures, %d DICOMDIRs",
        root_path, result.files_seen, len(result.records), len(result.failures), result.dicomdirs,
    )  # fmt: skip
    if result.duplicates:
        logger.warning("%d images have the same bytes as another file", result.duplicates)
    return result


def _new_references(outcomes: dict[str, Outcome], just_read: Sequence[str]) -> list[str]:
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


def _collect(outcomes: dict[str, Outcome], out_path: Path) -> IngestResult:
    records: list[ImageRecord] = []
    failures: list[Failure] = []
    dicomdirs = 0
    for path in sorted(outcomes):
        kind, payload = outcomes[path]
        if kind == "image":
            payload["pixel_spacing"] = (
                tuple(payload["pixel_spacing"]) if payload["pixel_spacing"] else None
            )
            records.append(ImageRecord(**payload))
        elif kind == "dicomdir":
            dicomdirs += 1
        else:
            failures.append(Failure(path=path, reason=payload))
    hashes = [r.content_hash for r in records]
    return IngestResult(
        manifest=write_manifest(out_path / IMAGES_FILE, records),
        failures_file=write_manifest(out_path / FAILURES_FILE, failures),
        records=records,
        failures=failures,
        files_seen=len(outcomes),
        dicomdirs=dicomdirs,
        duplicates=len(hashes) - len(set(hashes)),
    )
