"""Batch ingest: walk a folder of DICOM files and write an image manifest plus a failure list.

``ingest_directory(root, out_dir)`` looks at every file below ``root`` (any depth, any name, no
extension needed), reads each header in a pool of worker processes with
:func:`medvl.io.dicom.read_dicom` (``decode=False`` unless ``decode_check``) and writes

* ``images.jsonl``: one :class:`~medvl.data.records.ImageRecord` per usable image, sorted by path;
* ``failures.jsonl``: one :class:`~medvl.data.records.Failure` (path, reason) per unusable file.

Every path the walk meets ends up in exactly one of the two, so a corpus with bad files always
completes and the counts add up. Entries that are not regular files are failures named for what
they are, judged from ``lstat`` alone (a FIFO is never opened: reading one blocks forever): a
dangling symbolic link, a link to a folder (not followed), a second link to a file already
read, a named pipe, a device, a socket. Files are judged by content, never by name: a file
without the ``DICM`` marker is still read if pydicom finds an image header in it, and non-DICOM
files are recorded as failures with the reason. A ``DICOMDIR`` is an index, not an image: the
files it references are added to the walk (once each, by resolved path) and a referenced file
that is missing becomes a failure.

Duplicate SOPInstanceUIDs: two files claiming the same instance would be two records with one
``image_id``. The rule: the file whose path sorts first is kept; every other one becomes a
failure saying whether it is a byte-identical copy or a conflicting file, and
``summary()["duplicate_uids"]`` counts them.

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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medvl.data.file_walk import Outcome, dicomdir_entries, new_references, walk_files
from medvl.data.processes import from_main_process, gather_shares, process_state, shard
from medvl.data.records import (
    Failure,
    ImageRecord,
    header_demographics,
    image_record,
    write_manifest,
)
from medvl.io.durable import disk_full_as_error

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
CRASH_REASON = "reading this file crashed the worker process (decoder fault); file skipped"
ID_TAGS = ("PatientID",)  # hashed into patient_key, never stored
DEMOGRAPHIC_TAGS = ("PatientSex", "PatientAge", "Manufacturer")  # subgroup fields, no IDs


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
    duplicate_uids: int = 0

    def summary(self) -> dict[str, int]:
        """Counts for logs and the CLI: files seen, images, failures, DICOMDIRs, duplicates."""
        return {
            "files_seen": self.files_seen,
            "images": len(self.records),
            "failures": len(self.failures),
            "dicomdirs": self.dicomdirs,
            "duplicate_contents": self.duplicates,
            "duplicate_uids": self.duplicate_uids,
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
        referenced = dicomdir_entries(path)
        return ("dicomdir", referenced) if referenced is not None else ("failure", err.reason)
    try:
        ids = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=[*ID_TAGS, *DEMOGRAPHIC_TAGS], force=True
        )
        content_hash = file_sha256(path)
    except OSError as err:
        return ("failure", f"file could not be read a second time ({type(err).__name__})")
    except Exception as err:  # header was valid a moment ago; the file changed under us
        return ("failure", f"header became unreadable while ingesting ({type(err).__name__})")
    pseudonym = patient_key(str(ids.get("PatientID", "") or ""), salt)
    demographics = header_demographics(*(str(ids.get(t, "") or "") for t in DEMOGRAPHIC_TAGS))
    record = image_record(
        image, path, image.sop_uid_hash or content_hash[:16],
        pseudonym or image.study_uid_hash, content_hash, demographics,
    )  # fmt: skip
    return ("image", asdict(record))


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
    paths, refused = walk_files(root_path, skip)
    paths.sort()
    workers = max(1, int(workers))
    args = (salt, decode_check)
    state = process_state()
    outcomes: dict[str, Outcome] = dict(refused)
    with tqdm(total=len(paths), unit="file", desc="ingest", disable=not progress) as bar:
        pending = shard(paths, state)  # under torchrun each rank reads every N-th file
        if state.num_processes > 1:
            logger.info("rank %d/%d reads %d of %d files", state.process_index,
                        state.num_processes, len(pending), len(paths))  # fmt: skip
            outcomes.update(run_chunked(_inspect_chunk, pending, args, workers=workers,
                                        chunk_size=_chunk_size(len(pending), workers, chunk_size),
                                        on_done=bar.update))  # fmt: skip
            shares = gather_shares(list(outcomes.items()), state)
            if shares is None:  # the main process merges and writes; this rank is done
                return from_main_process(None, state)
            outcomes = dict(item for share in shares for item in share)
            pending = new_references(outcomes, paths)  # DICOMDIR references: main only
            bar.total += len(pending)
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
            pending = new_references(outcomes, pending)
            bar.total += len(pending)
    result = _collect(outcomes, out_path)
    from_main_process(result, state)
    logger.info(
        "ingest %s: %d files, %d images, %d failures, %d DICOMDIRs",
        root_path, result.files_seen, len(result.records), len(result.failures), result.dicomdirs,
    )  # fmt: skip
    if result.duplicates:
        logger.warning("%d images have the same bytes as another file", result.duplicates)
    if result.duplicate_uids:
        logger.warning(
            "%d files repeat the SOPInstanceUID of another file; the first by path is kept, "
            "the others are in %s",
            result.duplicate_uids,
            result.failures_file,
        )
    return result


def _collect(outcomes: dict[str, Outcome], out_path: Path) -> IngestResult:
    """Records and failures in path order from ``outcomes`` (emptied on the way), written out."""
    records: list[ImageRecord] = []
    failures: list[Failure] = []
    dicomdirs = duplicate_uids = 0
    kept: dict[str, ImageRecord] = {}
    files_seen = len(outcomes)
    for path in sorted(outcomes):
        kind, payload = outcomes.pop(path)  # each payload freed once its record exists
        if kind == "image":
            payload["pixel_spacing"] = (
                tuple(payload["pixel_spacing"]) if payload["pixel_spacing"] else None
            )
            record = ImageRecord(**payload)
            first = kept.setdefault(record.image_id, record)
            if first is not record:
                duplicate_uids += 1
                same = first.content_hash == record.content_hash
                failures.append(Failure(path=path, reason=_duplicate_reason(record, same)))
                continue
            records.append(record)
        elif kind == "dicomdir":
            dicomdirs += 1
        else:
            failures.append(Failure(path=path, reason=payload))
    hashes = [r.content_hash for r in records]
    files = [out_path / IMAGES_FILE, out_path / FAILURES_FILE]
    temps = [f.with_name(f.name + ".tmp") for f in files]
    needed = 1024 * (len(records) + len(failures))  # a manifest row is well under 1 KB
    with disk_full_as_error(out_path, "the ingest manifests", temps, needed):
        write_manifest(files[0], records)
        write_manifest(files[1], failures)
    return IngestResult(
        manifest=files[0],
        failures_file=files[1],
        records=records,
        failures=failures,
        files_seen=files_seen,
        dicomdirs=dicomdirs,
        duplicates=len(hashes) - len(set(hashes)),
        duplicate_uids=duplicate_uids,
    )


def _duplicate_reason(record: ImageRecord, same_bytes: bool) -> str:
    what = "a byte-identical copy" if same_bytes else "different bytes (a conflicting file)"
    return (
        f"duplicate SOPInstanceUID: image_id {record.image_id} is already in the manifest from "
        f"the file whose path sorts first; this one holds {what} and is left out"
    )
