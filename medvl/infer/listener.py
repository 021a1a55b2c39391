"""A DICOM storage SCP that runs medvl on each study once it has fully arrived.

PACS send a study instance by instance, with no "study complete" message. The listener writes
every received instance to ``<out>/incoming/<study key>/``, considers a study complete after a
quiet period with no new instances, and hands complete studies to a bounded work queue served by
one worker thread, so a burst of studies never loads several models' worth of work at once.

Instances that cannot be used (undecodable, inconsistent pixel data, missing attributes) are
refused with a DIMSE failure status and a log line that names the reason, never the patient.
Processed studies move to ``<out>/processed/``. Studies left in ``incoming/`` by an earlier run
(a crash, a SIGTERM mid-study) are picked up on start, so a received file is never lost.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from medvl.io.dicom import DicomReadError, hash_uid, read_dicom

logger = logging.getLogger(__name__)

# DIMSE C-STORE statuses (PS3.4 Table B.2-1).
STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700

StudyProcessor = Callable[[Path], list[Path]]


@dataclass
class ListenerConfig:
    """Where and how the listener runs."""

    ae_title: str = "MEDVL"
    host: str = "127.0.0.1"
    port: int = 11112
    output_dir: Path = Path("runs/listener")
    quiet_seconds: float = 10.0
    max_queued_studies: int = 16
    forward: str | None = None  # "AE@host:port": C-STORE results there


@dataclass
class _StudyState:
    directory: Path
    last_received: float
    instances: int = 0
    queued: bool = False


@dataclass
class ListenerStats:
    """Counters a caller (or a test) can read while the listener runs."""

    received: int = 0
    refused: int = 0
    studies_done: int = 0
    studies_failed: int = 0
    forwarded: int = 0
    refusals: list[str] = field(default_factory=list)


def parse_forward(text: str) -> tuple[str, str, int]:
    """Split ``AE@host:port`` into its parts, with a clear error for anything else."""
    try:
        ae_title, address = text.split("@", 1)
        host, port = address.rsplit(":", 1)
        return ae_title, host, int(port)
    except ValueError:
        raise ValueError(f"forward destination {text!r} is not of the form AE@host:port") from None


class StudyListener:
    """Storage SCP + quiet-period study assembly + bounded work queue.

    Parameters
    ----------
    config
        Network address, output folder, quiet period, queue bound and forward destination.
    processor
        Called with a complete study's folder; returns DICOM files to forward (SEG, SR).
        Exceptions are logged (type only, no message text from headers) and the study is kept.
    """

    def __init__(self, config: ListenerConfig, processor: StudyProcessor) -> None:
        self.config = config
        self.processor = processor
        self.stats = ListenerStats()
        self.incoming = Path(config.output_dir) / "incoming"
        self.archive = Path(config.output_dir) / "processed"
        for folder in (self.incoming, self.archive):
            folder.mkdir(parents=True, exist_ok=True)
        self._studies: dict[str, _StudyState] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue(maxsize=config.max_queued_studies)
        self._stop = threading.Event()
        self._server = None
        self._threads: list[threading.Thread] = []
        self._forward = parse_forward(config.forward) if config.forward else None

    # -- network -----------------------------------------------------------------------------
    def start(self) -> None:
        """Recover unfinished studies, start the SCP and the scheduler and worker threads."""
        for directory in sorted(p for p in self.incoming.iterdir() if p.is_dir()):
            self._studies[directory.name] = _StudyState(directory, last_received=0.0)
        ae = AE(ae_title=self.config.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            (self.config.host, self.config.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        for target in (self._schedule_loop, self._work_loop):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self._threads.append(thread)
        logger.info(
            "listening as %s on %s:%d", self.config.ae_title, self.config.host, self.config.port
        )

    def stop(self, drain_timeout: float = 60.0) -> None:
        """Stop accepting associations, process every study already received, then return."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        deadline = time.monotonic() + drain_timeout
        with self._lock:
            for state in self._studies.values():
                state.last_received = 0.0  # no more instances can arrive: all are complete
        while time.monotonic() < deadline:
            with self._lock:
                pending = bool(self._studies)
            if not pending and self._queue.empty():
                break
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        logger.info(
            "listener stopped: %d received, %d refused, %d studies done, %d failed",
            self.stats.received,
            self.stats.refused,
            self.stats.studies_done,
            self.stats.studies_failed,
        )

    def _on_store(self, event: evt.Event) -> int:
        try:
            dataset: Dataset = event.dataset
            dataset.file_meta = event.file_meta
            study_key = hash_uid(str(dataset.StudyInstanceUID))
            sop_key = hash_uid(str(dataset.SOPInstanceUID))
        except Exception as err:  # a dataset pynetdicom cannot even decode
            return self._refuse(f"undecodable dataset ({type(err).__name__})")
        directory = self.incoming / study_key
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{sop_key}.dcm"
        tmp = path.with_suffix(".part")
        try:
            dataset.save_as(tmp, enforce_file_format=True)
            read_dicom(tmp, decode=False)
        except DicomReadError as err:
            tmp.unlink(missing_ok=True)
            return self._refuse(f"instance {sop_key}: {err.reason}")
        except Exception as err:
            tmp.unlink(missing_ok=True)
            return self._refuse(f"instance {sop_key}: cannot be stored ({type(err).__name__})")
        tmp.replace(path)
        with self._lock:
            state = self._studies.setdefault(study_key, _StudyState(directory, time.monotonic()))
            state.last_received = time.monotonic()
            state.instances += 1
            self.stats.received += 1
        return STATUS_SUCCESS

    def _refuse(self, reason: str) -> int:
        with self._lock:
            self.stats.refused += 1
            self.stats.refusals.append(reason)
        logger.warning("refused C-STORE: %s", reason)
        return STATUS_CANNOT_UNDERSTAND

    # -- work --------------------------------------------------------------------------------
    def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                ready = [
                    key
                    for key, state in self._studies.items()
                    if not state.queued and now - state.last_received >= self.config.quiet_seconds
                ]
            for key in ready:
                try:
                    self._queue.put_nowait(key)
                except queue.Full:
                    break  # stays pending; retried on the next tick
                with self._lock:
                    self._studies[key].queued = True
            time.sleep(0.05)

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            try:
                key = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._lock:
                state = self._studies[key]
            try:
                outputs = self.processor(state.directory)
            except Exception as err:
                logger.error("study %s failed: %s", key, type(err).__name__)
                with self._lock:
                    self.stats.studies_failed += 1
                    del self._studies[key]
                continue
            if self._forward is not None:
                self._send(outputs)
            self._archive(state.directory)
            with self._lock:
                self.stats.studies_done += 1
                del self._studies[key]
            logger.info("study %s done: %d result objects", key, len(outputs))

    def _archive(self, directory: Path) -> None:
        """Move a processed study out of ``incoming/`` so a restart does not redo it."""
        target = self.archive / f"{directory.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        shutil.move(str(directory), target)

    def _send(self, files: list[Path]) -> None:
        assert self._forward is not None
        ae_title, host, port = self._forward
        ae = AE(ae_title=self.config.ae_title)
        ae.requested_contexts = AllStoragePresentationContexts[:127]
        assoc = ae.associate(host, port, ae_title=ae_title)
        if not assoc.is_established:
            logger.error("forward to %s@%s:%d: association refused", ae_title, host, port)
            return
        try:
            for path in files:
                status = assoc.send_c_store(path)
                if status and status.Status == STATUS_SUCCESS:
                    self.stats.forwarded += 1
                else:
                    logger.error("forward of %s failed", path.name)
        finally:
            assoc.release()
