"""Results to a destination, C-STORE or DICOMweb STOW-RS: retries, backoff, dead letters.

The association requests one presentation context per SOP class in the batch (SEG, Comprehensive
3D SR, ...), each offering the file's own transfer syntax with Explicit and Implicit VR Little
Endian as fallbacks. A batch that does not fully arrive is retried on a new association with
exponential backoff; what still fails is copied into the dead-letter folder with a note why, so
an operator can resend it (e.g. ``storescu``) and nothing is lost silently. A destination that
is an http(s) URL is a DICOMweb server instead (:mod:`medvl.infer.listener.stow`), with the same
retries and dead letters.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
WARNING_STATUSES = (0x0001, 0xB000, 0xB006, 0xB007)  # stored, with a warning (PS3.4 B.2.3)


def parse_destination(text: str) -> tuple[str, str, int]:
    """Split ``AE@host:port`` into its parts, with a clear error for anything else."""
    try:
        ae_title, address = text.split("@", 1)
        host, port = address.rsplit(":", 1)
        if not ae_title or not host:
            raise ValueError
        return ae_title, host, int(port)
    except ValueError:
        raise ValueError(f"forward destination {text!r} is not of the form AE@host:port") from None


def is_stow_url(destination: str) -> bool:
    """Whether a forward destination is a DICOMweb base URL rather than ``AE@host:port``."""
    return destination.startswith(("http://", "https://"))


@dataclass
class ForwardConfig:
    """Where results go and how hard to try."""

    destination: str  # AE@host:port, or a DICOMweb base URL for STOW-RS
    calling_ae: str = "MEDVL"
    attempts: int = 4
    backoff_seconds: float = 1.0  # waits 1, 2, 4 ... seconds between attempts
    timeout_seconds: float = 30.0
    auth_env: str | None = None  # STOW-RS: env variable holding the Authorization header value


class Forwarder:
    """Send result files to one destination; dead-letter what cannot be delivered."""

    def __init__(
        self,
        config: ForwardConfig,
        dead_letter: Path,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._attempt: Callable[[list[Path]], tuple[list[Path], str]]
        if is_stow_url(config.destination):
            from medvl.infer.listener.stow import StowSender  # imports requests: only when used

            self._attempt = StowSender(config.destination, config.auth_env, config.timeout_seconds)
        else:
            self.ae_title, self.host, self.port = parse_destination(config.destination)
            self._attempt = self._cstore
        self.dead_letter = Path(dead_letter)
        self.sleep = sleep

    def send(self, files: list[Path], tag: str) -> list[Path]:
        """Deliver ``files``; return those that were dead-lettered (empty: all delivered).

        ``tag`` names the dead-letter sub-folder (the study key and result version).
        """
        pending = list(files)
        reason = "no attempt made"
        for attempt in range(self.config.attempts):
            if attempt:
                self.sleep(self.config.backoff_seconds * 2 ** (attempt - 1))
            pending, reason = self._attempt(pending)
            if not pending:
                return []
            logger.warning(
                "forward attempt %d/%d: %d object(s) not delivered (%s)",
                attempt + 1,
                self.config.attempts,
                len(pending),
                reason,
            )
        self._park(pending, tag, reason)
        return pending

    def _cstore(self, files: list[Path]) -> tuple[list[Path], str]:
        """One association; return the files still undelivered and why."""
        datasets = {path: pydicom.dcmread(path) for path in files}
        ae = AE(ae_title=self.config.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.config.timeout_seconds
        contexts: dict[str, list[str]] = {}
        for ds in datasets.values():
            syntaxes = contexts.setdefault(str(ds.SOPClassUID), [])
            for uid in (
                ds.file_meta.TransferSyntaxUID,
                ExplicitVRLittleEndian,
                ImplicitVRLittleEndian,
            ):
                if uid not in syntaxes:
                    syntaxes.append(uid)
        for sop_class, syntaxes in contexts.items():
            ae.add_requested_context(sop_class, syntaxes)
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        except Exception as err:  # socket errors surface here on some platforms
            return files, f"association failed ({type(err).__name__})"
        if not assoc.is_established:
            return files, "association rejected or timed out, or no presentation context accepted"
        failed, reason = [], ""
        try:
            for path, ds in datasets.items():
                try:
                    status = assoc.send_c_store(ds)
                except ValueError:  # pynetdicom: no accepted context for this SOP class
                    failed.append(path)
                    reason = f"no presentation context accepted for {ds.SOPClassUID.name}"
                    continue
                except Exception as err:
                    failed.append(path)
                    reason = f"C-STORE failed ({type(err).__name__})"
                    continue
                code = getattr(status, "Status", None)
                if code != STATUS_SUCCESS and code not in WARNING_STATUSES:
                    failed.append(path)
                    reason = "no response" if code is None else f"status 0x{code:04X}"
        finally:
            if assoc.is_established:
                assoc.release()
        return failed, reason

    def _park(self, files: list[Path], tag: str, reason: str) -> None:
        folder = self.dead_letter / tag
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, folder / path.name)
        note = {"destination": self.config.destination, "reason": reason, "at": time.time()}
        (folder / "reason.json").write_text(json.dumps(note, indent=2))
        logger.error("forward: %d object(s) parked in dead-letter/%s (%s)", len(files), tag, reason)
