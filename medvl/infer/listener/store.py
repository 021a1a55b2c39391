"""The listener's durable study state machine, kept on disk so it survives kill -9.

Every study lives in ``<root>/studies/<study key>/``: the received images under ``instances/``
(non-images under ``non-images/``, stored but never analysed; each file written to a temporary
file, flushed and renamed before C-STORE answers Success) and ``state.json`` (replaced
atomically on every transition)::

    received -> complete -> analysed -> written -> forwarded -> done      (or -> failed)

A study whose instance set grows after it was taken for analysis (a late instance, a second
batch) goes back to ``received`` with the next result version, so results are versioned under
``<root>/results/<study key>/v<N>/`` and never silently overwritten. On restart, every study
that is not ``done`` or ``failed`` resumes: ``complete`` and ``analysed`` are analysed again (the
analysis lived in memory), ``written`` is forwarded, ``forwarded`` is finished.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATES = ("received", "complete", "analysed", "written", "forwarded", "done", "failed")
ACTIVE = ("complete", "analysed", "written", "forwarded")
NON_IMAGES = "non-images"


def write_json_atomic(path: Path, document: dict) -> None:
    """Write ``document`` to ``path`` through a flushed temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(document, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class StudyState:
    """What ``state.json`` holds for one study."""

    state: str = "received"
    version: int = 1
    analysed: list[str] = field(default_factory=list)  # instance keys of the current version
    reason: str | None = None  # why the study failed, or why forwarding dead-lettered
    updated: float = field(default_factory=time.time)
    done_at: float | None = None
    instances_purged: bool = False


@dataclass
class Retention:
    """What happens to received instances once their study is done.

    ``keep`` keeps them; ``delete`` removes them as soon as the results are forwarded; ``days:N``
    (the default, N = 7) keeps them N days so a late instance re-analyses the whole study.
    """

    days: float | None = 7.0  # None: keep forever; 0: delete when done

    @classmethod
    def parse(cls, text: str) -> Retention:
        """``keep``, ``delete`` or ``days:N``; anything else is a ValueError naming the value."""
        if text == "keep":
            return cls(None)
        if text == "delete":
            return cls(0.0)
        if text.startswith("days:"):
            try:
                days = float(text[5:])
            except ValueError:
                days = -1.0
            if days >= 0:
                return cls(days)
        raise ValueError(f"retention {text!r}: use keep, delete or days:N (N >= 0)")


class StudyStore:
    """Instances, per-study state and result folders under one root, safe across threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.studies = self.root / "studies"
        self.results = self.root / "results"
        self.dead_letter = self.root / "dead-letter"
        self.tmp = self.root / "tmp"
        for folder in (self.studies, self.results, self.dead_letter, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._states: dict[str, StudyState] = {}
        self._last_received: dict[str, float] = {}
        self._recover()

    # -- paths -------------------------------------------------------------------------------
    def instances_dir(self, key: str) -> Path:
        return self.studies / key / "instances"

    def result_dir(self, key: str, version: int) -> Path:
        return self.results / key / f"v{version}"

    def instance_keys(self, key: str) -> list[str]:
        folder = self.instances_dir(key)
        return sorted(p.stem for p in folder.glob("*.dcm")) if folder.is_dir() else []

    # -- state -------------------------------------------------------------------------------
    def read(self, key: str) -> StudyState:
        """The study's state (a copy; change it through the transitions)."""
        with self._lock:
            return StudyState(**asdict(self._states.get(key) or StudyState()))

    def _write(self, key: str, state: StudyState) -> None:
        state.updated = time.time()
        write_json_atomic(self.studies / key / "state.json", asdict(state))
        self._states[key] = state

    def study_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._states)

    def counts(self) -> dict[str, int]:
        """How many studies are in each state (for the status file)."""
        out = dict.fromkeys(STATES, 0)
        with self._lock:
            for state in self._states.values():
                out[state.state] += 1
        return out

    def _recover(self) -> None:
        """Drop leftovers of a crash (temporary files, empty folders); resume the rest."""
        for stale in self.tmp.iterdir():
            stale.unlink(missing_ok=True)
        for folder in sorted(p for p in self.studies.iterdir() if p.is_dir()):
            key, path = folder.name, folder / "state.json"
            files = list(self.instances_dir(key).glob("*.dcm"))
            if not path.is_file():
                if not files:
                    if not any((folder / NON_IMAGES).glob("*.dcm")):
                        shutil.rmtree(folder, ignore_errors=True)  # nothing was acknowledged
                    continue
                self._write(key, StudyState())  # killed between the file and its state
            state = StudyState(**json.loads(path.read_text()))
            self._states[key] = state
            self._last_received[key] = max((p.stat().st_mtime for p in files), default=0.0)
            if state.state in ("complete", "analysed"):
                state.state = "complete"  # the analysis lived in memory: analyse again
                self._write(key, state)

    # -- transitions -------------------------------------------------------------------------
    def receive(self, key: str, instance: str, tmp_file: Path, image: bool = True) -> None:
        """File a flushed temporary file as instance ``instance`` of study ``key``.

        Non-images (SR, key objects, RT plans, medvl's own SEG and SR coming back) are kept
        under ``non-images/`` and never analysed, so they neither open nor re-open a study:
        a PACS routing our results back to us cannot start a loop.
        """
        if not image:
            folder = self.studies / key / NON_IMAGES
            with self._lock:
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_file, folder / f"{instance}.dcm")
            return
        folder = self.instances_dir(key)
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_file, folder / f"{instance}.dcm")
            self._last_received[key] = time.time()
            state = self.read(key)
            if key not in self._states:
                self._write(key, state)
            elif state.state in ("done", "failed"):
                state = StudyState(version=state.version + 1)
                self._write(key, state)
                shutil.rmtree(self.result_dir(key, state.version), ignore_errors=True)

    def take_complete(self, quiet_seconds: float) -> list[str]:
        """Studies quiet for ``quiet_seconds`` move from received to complete; return them all.

        Also returns studies already complete, written or forwarded (a restart resumes them).
        """
        now = time.time()
        ready = []
        with self._lock:
            for key in sorted(self._states):
                state = self.read(key)
                if state.state == "received":
                    if now - self._last_received.get(key, 0.0) < quiet_seconds:
                        continue
                    state.state = "complete"
                    self._write(key, state)
                if state.state in ACTIVE:
                    ready.append(key)
        return ready

    def begin_analysis(self, key: str) -> tuple[int, list[Path]]:
        """The version to produce and the instance files it covers (a snapshot)."""
        with self._lock:
            state = self.read(key)
            state.analysed = self.instance_keys(key)
            self._write(key, state)
            folder = self.instances_dir(key)
            return state.version, [folder / f"{k}.dcm" for k in state.analysed]

    def advance(self, key: str, to: str, reason: str | None = None) -> None:
        """Record a transition; ``done`` with new instances re-opens the study instead."""
        with self._lock:
            state = self.read(key)
            late = set(self.instance_keys(key)) - set(state.analysed)
            if to in ("done", "failed") and late:
                state = StudyState(version=state.version + 1)
                self._last_received[key] = time.time()
            else:
                state.state = to
                state.reason = reason if reason is not None else state.reason
                if to in ("done", "failed"):
                    state.done_at = time.time()
            self._write(key, state)

    def purge(self, key: str, older_than_days: float) -> bool:
        """Delete a done study's instances once they are older than the retention period."""
        with self._lock:
            state = self.read(key)
            if state.state != "done" or state.instances_purged or state.done_at is None:
                return False
            if time.time() - state.done_at < older_than_days * 86400:
                return False
            if set(self.instance_keys(key)) - set(state.analysed):
                return False
            shutil.rmtree(self.instances_dir(key), ignore_errors=True)
            shutil.rmtree(self.studies / key / NON_IMAGES, ignore_errors=True)
            state.instances_purged = True
            self._write(key, state)
            return True
