"""The storage SCP and its single worker: receive, wait for quiet, analyse, write, forward.

C-STORE handlers run on pynetdicom's association threads; they only file the instance in the
:class:`~medvl.infer.listener.store.StudyStore` (flushed and renamed before Success is
answered). One worker thread moves studies through the state machine, one at a time, so a burst
of studies never loads several models' worth of work at once. A study's failure is recorded in
its state (``failed`` with a reason), counted and logged; the listener goes on. If the worker
itself dies, :attr:`StudyListener.dead` is set and the CLI exits non-zero so a supervisor
restarts the process, which resumes every unfinished study from disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pydicom.pixels.decoders.base import get_decoder
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from medvl.infer.errors import failure_reason
from medvl.infer.listener.forward import ForwardConfig, Forwarder
from medvl.infer.listener.status import STATUS_FILE
from medvl.infer.listener.store import Retention, StudyStore, write_json_atomic
from medvl.io.dicom import DicomReadError, hash_uid, read_dicom

logger = logging.getLogger(__name__)

# DIMSE C-STORE statuses (PS3.4 Table B.2-1).
STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700
QUEUED = ("received", "complete", "analysed", "written", "forwarded")


def decodable_transfer_syntaxes() -> list[str]:
    """Every transfer syntax pydicom (with the installed plugins) can decode pixel data from."""
    out = []
    for uid in ALL_TRANSFER_SYNTAXES:
        try:
            if get_decoder(uid).is_available:
                out.append(uid)
        except NotImplementedError:
            continue
    return out


class StudyProcessor(Protocol):
    """What the listener runs on a complete study: analyse, then write the result."""

    def analyse(self, files: list[Path]) -> Any: ...

    def write(self, result: Any, out_dir: Path) -> list[Path]:
        """Write the result into ``out_dir`` (its JSON last); return the DICOM files to send."""
        ...


@dataclass
class ListenerConfig:
    """Where and how the listener runs."""

    ae_title: str = "MEDVL"
    host: str = "127.0.0.1"
    port: int = 11112
    output_dir: Path = Path("runs/listener")
    quiet_seconds: float = 10.0
    forward: str | None = None  # "AE@host:port": C-STORE results there
    forward_attempts: int = 4
    forward_backoff_seconds: float = 1.0
    stow_url: str | None = None  # DICOMweb base URL: STOW-RS results to <url>/studies as well
    stow_auth_env: str | None = None  # env variable holding STOW's Authorization header value
    retention: str = "days:7"  # keep | delete | days:N (received instances, once done)
    max_associations: int = 16


@dataclass
class ListenerStats:
    """Counters a caller (or a test) can read while the listener runs."""

    received: int = 0
    refused: int = 0
    studies_done: int = 0  # result versions written and forwarded
    studies_failed: int = 0
    forwarded: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    refusals: deque[str] = field(default_factory=lambda: deque(maxlen=100))  # the latest


class StudyListener:
    """Storage SCP + durable study store + one supervised worker.

    Parameters
    ----------
    config
        Network address, output folder, quiet period, forward destination, retention.
    processor
        Analyses a complete study and writes its result; see :class:`StudyProcessor`.
    """

    def __init__(self, config: ListenerConfig, processor: StudyProcessor) -> None:
        self.config = config
        self.processor = processor
        self.retention = Retention.parse(config.retention)
        self.stats = ListenerStats()
        self.store = StudyStore(Path(config.output_dir))
        self.forwarders = {  # dead-letter tag suffix -> forwarder
            suffix: Forwarder(
                ForwardConfig(
                    destination,
                    calling_ae=config.ae_title,
                    attempts=config.forward_attempts,
                    backoff_seconds=config.forward_backoff_seconds,
                    auth_env=config.stow_auth_env if suffix else None,
                ),
                self.store.dead_letter,
            )
            for suffix, destination in (("", config.forward), ("-stow", config.stow_url))
            if destination
        }
        self.dead = threading.Event()  # set when the worker thread died: exit non-zero
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._server = None
        self._worker: threading.Thread | None = None
        self._status: threading.Thread | None = None
        self._started = 0.0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the SCP, the worker and the status writer; resumes unfinished studies."""
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = self.config.max_associations
        syntaxes = decodable_transfer_syntaxes()
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            (self.config.host, self.config.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        self._started = time.time()
        self._worker = threading.Thread(target=self._supervised, daemon=True, name="medvl-worker")
        self._status = threading.Thread(target=self._status_loop, daemon=True, name="medvl-status")
        self._worker.start()
        self._write_status()
        self._status.start()
        logger.info(
            "listening as %s on %s:%d", self.config.ae_title, self.config.host, self.config.port
        )

    def stop(self, timeout: float = 8.0) -> None:
        """Stop accepting associations and let the worker finish its current step.

        Whatever is unfinished stays on disk and resumes on the next start, so stopping never
        waits for the queue to drain.
        """
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in (self._worker, self._status):
            if thread is not None:
                thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._write_status(running=False)
        logger.info(
            "listener stopped: %d received, %d refused, %d studies done, %d failed",
            self.stats.received,
            self.stats.refused,
            self.stats.studies_done,
            self.stats.studies_failed,
        )

    # -- receiving ---------------------------------------------------------------------------
    def _on_store(self, event: evt.Event) -> int:
        tmp = self.store.tmp / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as fh:
                fh.write(event.encoded_dataset())
                fh.flush()
                os.fsync(fh.fileno())
            header = pydicom.dcmread(tmp, defer_size=1024)
            study_key = hash_uid(str(header.get("StudyInstanceUID", "")))
            sop_key = hash_uid(str(header.get("SOPInstanceUID", "")))
            if not study_key or not sop_key:
                raise DicomReadError(tmp, "StudyInstanceUID or SOPInstanceUID is missing")
            image = "PixelData" in header
            if image:
                read_dicom(tmp, decode=False)  # images: the pixel header must be consistent
            self.store.receive(study_key, sop_key, tmp, image=image)
        except DicomReadError as err:
            tmp.unlink(missing_ok=True)
            return self._refuse(err.reason)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            logger.error("cannot store an instance: %s", type(err).__name__)
            return STATUS_OUT_OF_RESOURCES
        except Exception as err:
            tmp.unlink(missing_ok=True)
            return self._refuse(f"undecodable dataset ({type(err).__name__})")
        with self._lock:
            self.stats.received += 1
        return STATUS_SUCCESS

    def _refuse(self, reason: str) -> int:
        with self._lock:
            self.stats.refused += 1
            self.stats.refusals.append(reason)
        logger.warning("refused C-STORE: %s", reason)
        return STATUS_CANNOT_UNDERSTAND

    # -- working -----------------------------------------------------------------------------
    def _supervised(self) -> None:
        try:
            self._work_loop()
        except BaseException as err:
            with self._lock:
                self.stats.last_error = f"worker died: {type(err).__name__}"
            logger.critical("worker died (%s); the listener must restart", type(err).__name__)
            logger.debug("worker traceback", exc_info=True)
            self.dead.set()

    def _work_loop(self) -> None:
        last_purge = 0.0
        while not self._stop.is_set():
            keys = self.store.take_complete(self.config.quiet_seconds)
            for key in keys:
                if self._stop.is_set():
                    return
                self._process(key)
            if time.monotonic() - last_purge > 60 and self.retention.days:
                last_purge = time.monotonic()
                for key in self.store.study_keys():
                    self.store.purge(key, self.retention.days)
            if not keys:
                self._stop.wait(0.05)

    def _process(self, key: str) -> None:
        """Move one study as far as it goes; a failure fails this study only."""
        store = self.store
        try:
            state = store.read(key)
            if state.state == "complete":
                version, files = store.begin_analysis(key)
                started = time.perf_counter()
                result = self.processor.analyse(files)
                store.advance(key, "analysed")
                out = store.result_dir(key, version)
                shutil.rmtree(out, ignore_errors=True)  # a half-written try of this version
                out.mkdir(parents=True)
                self.processor.write(result, out)
                store.advance(key, "written")
                logger.info(
                    "study %s v%d analysed: %d instance(s), %.2f s",
                    key,
                    version,
                    len(files),
                    time.perf_counter() - started,
                )
                if self._stop.is_set():
                    return
            state = store.read(key)
            if state.state == "written":
                self._forward(key, state.version)
            if store.read(key).state == "forwarded":
                store.advance(key, "done")
                if self.retention.days == 0:
                    store.purge(key, 0.0)
                with self._lock:
                    self.stats.studies_done += 1
        except Exception as err:
            reason = failure_reason(err)
            logger.debug("study %s traceback", key, exc_info=True)
            store.advance(key, "failed", reason=reason)
            with self._lock:
                self.stats.studies_failed += 1
                self.stats.last_error = f"study {key}: {reason}"
            logger.error("study %s failed: %s", key, reason)

    def _forward(self, key: str, version: int) -> None:
        files = sorted(self.store.result_dir(key, version).glob("*.dcm"))
        parked: list[Path] = []
        for suffix, forwarder in self.forwarders.items() if files else ():
            lost = forwarder.send(files, f"{key}-v{version}{suffix}")
            parked += lost
            with self._lock:
                self.stats.forwarded += len(files) - len(lost)
        with self._lock:
            self.stats.dead_lettered += len(parked)
            if parked:
                self.stats.last_error = f"study {key}: {len(parked)} object(s) dead-lettered"
        self.store.advance(key, "forwarded", reason="dead-lettered" if parked else None)

    # -- health ------------------------------------------------------------------------------
    def status(self, running: bool = True) -> dict[str, Any]:
        """Queue depth, studies per state, counters, last error, worker liveness."""
        counts = self.store.counts()
        with self._lock:
            stats = asdict(self.stats)
        stats.pop("refusals")
        return {
            "running": running,
            "pid": os.getpid(),
            "started": self._started,
            "updated": time.time(),
            "worker_alive": bool(self._worker and self._worker.is_alive()),
            "queue_depth": sum(counts[s] for s in QUEUED),
            "studies": counts,
            **stats,
        }

    def _write_status(self, running: bool = True) -> None:
        write_json_atomic(Path(self.config.output_dir) / STATUS_FILE, self.status(running))

    def _status_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._write_status()
            except OSError as err:
                logger.warning("cannot write %s (%s)", STATUS_FILE, type(err).__name__)
