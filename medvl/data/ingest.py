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

Memory stays flat as the corpus grows: the files to read, each file's outcome and the
de-duplication index wait on disk in an :class:`~medvl.data.outcome_store.OutcomeStore` (a
temporary folder in ``out_dir``, removed at the end, also on error), and both manifests are
written from it in one pass in path order, through temporary files renamed at the end.
:class:`IngestResult` holds the counts; :meth:`IngestResult.iter_records` reads the records
back. Under ``torchrun`` every rank walks the folder and reads every N-th file into its own
store; the main process takes in the other ranks' outcomes a batch at a time, follows the
DICOMDIRs and writes the manifests a one-process run writes, byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medvl.data.file_walk import Outcome, dicomdir_entries, new_references, walk_files
from medvl.data.outcome_store import OutcomeStore
from medvl.data.processes import from_main_process, gather_shares, process_state
from medvl.data.records import (
    Failure,
    ImageRecord,
    header_demographics,
    image_record,
    iter_manifest,
    manifest_line,
)
from medvl.data.worker_pool import run_chunked
from medvl.io.durable import disk_full_as_error

__all__ = [
    "FAILURES_FILE",
    "IMAGES_FILE",
    "IngestConfig",
    "IngestResult",
    "file_sha256",
    "ingest_directory",
    "inspect_file",
]

logger = logging.getLogger(__name__)

IMAGES_FILE = "images.jsonl"
FAILURES_FILE = "failures.jsonl"
ID_TAGS = ("PatientID",)  # hashed into patient_key, never stored
DEMOGRAPHIC_TAGS = ("PatientSex", "PatientAge", "Manufacturer")  # subgroup fields, no IDs
SCRATCH_FOLDER = ".ingest-scratch"  # in out_dir: each rank's outcome store, removed at the end
GATHER_BATCH = 2048  # outcomes per rank per torchrun gather


@dataclass
class IngestConfig:
    """Settings of the ``medvl ingest`` job (the salt comes from ``MEDVL_SALT``, never a file)."""

    workers: int = 2
    decode_check: bool = False
    chunk_size: int = 0


@dataclass
class IngestResult:
    """What an ingest wrote and counted; the records stay on disk (:meth:`iter_records`)."""

    manifest: Path
    failures_file: Path
    images: int = 0
    failures: int = 0
    files_seen: int = 0
    dicomdirs: int = 0
    duplicates: int = 0
    duplicate_uids: int = 0

    def summary(self) -> dict[str, int]:
        """Counts for logs and the CLI: files seen, images, failures, DICOMDIRs, duplicates."""
        return {
            "files_seen": self.files_seen,
            "images": self.images,
            "failures": self.failures,
            "dicomdirs": self.dicomdirs,
            "duplicate_contents": self.duplicates,
            "duplicate_uids": self.duplicate_uids,
        }

    def iter_records(self) -> Iterator[ImageRecord]:
        """The manifest's image records in path order, read one at a time."""
        return iter_manifest(self.manifest, ImageRecord)

    def iter_failures(self) -> Iterator[Failure]:
        """The files left out and why, in path order, read one at a time."""
        return iter_manifest(self.failures_file, Failure)


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
        Where the manifests go (created if needed); the outcomes wait in a temporary folder
        there until they are written.
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
        The manifests' paths (identical bytes for any ``workers``) and the counts.
    """
    root_path, out_path = Path(root).resolve(), Path(out_dir).resolve()
    if not root_path.is_dir():
        raise FileNotFoundError(f"{root_path}: not a folder")
    state = process_state()
    job = _Job(root_path, out_path, max(1, int(workers)), chunk_size, (salt, decode_check))
    scratch = out_path / SCRATCH_FOLDER
    try:
        with (
            disk_full_as_error(out_path, "the ingest's outcome store"),
            OutcomeStore(scratch) as store,
        ):
            written = job.run(store, state, progress)
        result = from_main_process(written, state)  # other ranks have removed their stores
        if state.is_main_process:  # so what is left there is a killed run's store
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        if state.is_main_process:
            with contextlib.suppress(OSError):  # not empty: another rank failed
                scratch.rmdir()
    if written is None:  # torchrun: another rank; the main process wrote the manifests
        return result
    logger.info(
        "ingest %s: %d files, %d images, %d failures, %d DICOMDIRs",
        root_path, result.files_seen, result.images, result.failures, result.dicomdirs,
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


@dataclass
class _Job:
    """One ingest's settings; :meth:`run` does the reading and writing with a store."""

    root: Path
    out: Path
    workers: int
    chunk_size: int
    args: tuple[str, bool]

    def run(self, store: OutcomeStore, state: Any, progress: bool) -> IngestResult | None:
        """Walk, read (this rank's share), merge the ranks and write; ``None`` off the main rank."""
        from tqdm.auto import tqdm

        skip = {store.folder.parent} | ({self.out} if self.out != self.root else set())
        for path, problem in walk_files(self.root, skip, store):
            if problem is None:
                store.queue(path)
            elif state.is_main_process:  # every rank walks; the main one records the refusals
                store.add([(path, ("failure", problem))])
        rank, ranks, walked = state.process_index, state.num_processes, store.queued
        share = len(range(rank, walked, ranks))
        with tqdm(total=share, unit="file", desc="ingest", disable=not progress) as bar:
            if ranks > 1:  # under torchrun each rank reads every N-th file
                logger.info("rank %d/%d reads %d of %d files", rank, ranks, share, walked)
            self._read(store, store.chunks(0, walked, self._size(share), rank, ranks), bar)
            if ranks > 1:
                _gather_outcomes(store, state)
                if not state.is_main_process:
                    return None
            done = walked
            while True:  # the files DICOMDIRs reference: the main process only
                for path, problem in new_references(store.references(), store):
                    if problem is None:
                        store.queue(path)
                    else:
                        store.add([(path, ("failure", problem))])
                if store.queued == done:
                    break
                bar.total += store.queued - done
                chunks = store.chunks(done, store.queued, self._size(store.queued - done))
                self._read(store, chunks, bar)
                done = store.queued
        return _write_manifests(store, self.out)

    def _size(self, n: int) -> int:
        return _chunk_size(n, self.workers, self.chunk_size)

    def _read(self, store: OutcomeStore, chunks: Iterator[list[str]], bar: Any) -> None:
        def keep(paths: list[str], outcomes: list[Outcome]) -> None:
            store.add(zip(paths, outcomes, strict=True))
            bar.update(len(paths))

        run_chunked(_inspect_chunk, chunks, self.args, keep, workers=self.workers)


def _gather_outcomes(store: OutcomeStore, state: Any) -> None:
    """Copy every other rank's outcomes into the main process's store, a batch at a time."""
    counts = gather_shares([store.outcomes], state)
    rounds = -(-max(c for (c,) in counts[1:]) // GATHER_BATCH) if counts else 0
    with contextlib.closing(store.rows()) as rows:
        for _ in range(from_main_process(rounds, state)):
            batch = [] if state.is_main_process else list(itertools.islice(rows, GATHER_BATCH))
            for share in gather_shares(batch, state) or []:
                store.add_rows(share)


def _write_manifests(store: OutcomeStore, out: Path) -> IngestResult:
    """Merge the outcomes in path order into the two manifests (temp files, then rename).

    The first image of each SOPInstanceUID by path is kept; a later one becomes a failure.
    """
    files = [out / IMAGES_FILE, out / FAILURES_FILE]
    temps = [f.with_name(f.name + ".tmp") for f in files]
    result = IngestResult(manifest=files[0], failures_file=files[1], files_seen=store.outcomes)
    needed = 1024 * store.outcomes  # a manifest row is well under 1 KB
    with disk_full_as_error(out, "the ingest manifests", temps, needed):
        with temps[0].open("w") as images, temps[1].open("w") as failures:
            for path, kind, line, image_id, content_hash in store.in_path_order():
                if kind == "dicomdir":
                    result.dicomdirs += 1
                    continue
                if kind == "image":
                    first = store.first_content(image_id, content_hash)
                    if first is None:
                        images.write(line)
                        result.images += 1
                        result.duplicates += store.repeats_content(content_hash)
                        continue
                    result.duplicate_uids += 1
                    reason = _duplicate_reason(image_id, first == content_hash)
                    line = manifest_line(Failure(path=path, reason=reason))
                failures.write(line)
                result.failures += 1
        for temp, final in zip(temps, files, strict=True):
            temp.replace(final)
    return result


def _duplicate_reason(image_id: str, same_bytes: bool) -> str:
    what = "a byte-identical copy" if same_bytes else "different bytes (a conflicting file)"
    return (
        f"duplicate SOPInstanceUID: image_id {image_id} is already in the manifest from "
        f"the file whose path sorts first; this one holds {what} and is left out"
    )
