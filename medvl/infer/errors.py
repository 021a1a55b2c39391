"""How a failed study is described in logs, status files and summaries: never with PHI."""

from __future__ import annotations

from medvl.io.dicom import DicomReadError


def failure_reason(err: Exception) -> str:
    """Why a study failed, without values from headers.

    The error type, plus the message only where it names attributes rather than their values:
    :class:`DicomReadError` reasons are written PHI-free, and an ``AttributeError`` names the
    missing attribute. Other messages (highdicom, torch) may quote header values, so they are
    left out; ``--verbose`` logs the traceback at debug level.
    """
    if isinstance(err, DicomReadError):
        return err.reason
    if isinstance(err, AttributeError):
        return f"AttributeError: {err}"
    return type(err).__name__
