"""DICOMweb STOW-RS as a second way out: POST result objects to ``<url>/studies``.

``dicomweb-client`` builds the ``multipart/related; type="application/dicom"`` request; this
module only decides what arrived. An object counts as delivered when the HTTP status is 2xx and
the Store Instances Response lists it in ReferencedSOPSequence and not in FailedSOPSequence
(PS3.18 10.5.3). Retries, backoff and dead letters are :class:`~.forward.Forwarder`'s, so the
client's own retrying is switched off.

A credential never sits in a config file: ``auth_env`` names an environment variable whose value
is sent as the ``Authorization`` header (e.g. ``Bearer ...`` or ``Basic ...``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

WHOLE_BODY = 2**62  # one request body, not chunked transfer encoding (not every server takes it)


def check_stow_url(url: str) -> str:
    """``url`` if it is an http(s) URL without credentials, else a one-line ``ValueError``."""
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"STOW-RS url {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("STOW-RS url carries credentials; name an environment variable instead")
    return url.rstrip("/")


def auth_headers(auth_env: str | None) -> dict[str, str]:
    """The ``Authorization`` header from the environment variable ``auth_env`` (none if unset)."""
    if not auth_env:
        return {}
    value = os.environ.get(auth_env)
    if not value:
        raise ValueError(f"environment variable {auth_env} (the STOW-RS auth header) is not set")
    return {"Authorization": value}


class StowSender:
    """One STOW-RS request per attempt; called by :class:`~.forward.Forwarder`."""

    def __init__(self, url: str, auth_env: str | None = None, timeout: float = 30.0) -> None:
        self.client = DICOMwebClient(
            check_stow_url(url),
            headers=auth_headers(auth_env),
            chunk_size=WHOLE_BODY,
            timeout=timeout,
        )
        self.client.set_http_retry_params(retry=False)

    def __call__(self, files: list[Path]) -> tuple[list[Path], str]:
        """POST ``files``; return those not stored and why."""
        datasets = {path: pydicom.dcmread(path) for path in files}
        try:
            response = self.client.store_instances(list(datasets.values()))
        except requests.HTTPError as err:
            code = err.response.status_code if err.response is not None else "?"
            return files, f"STOW-RS HTTP {code}"
        except (requests.RequestException, OSError) as err:
            return files, f"STOW-RS request failed ({type(err).__name__})"
        except ValueError:  # a 2xx body that is not a Store Instances Response
            return files, "STOW-RS response unreadable"
        failed = {
            str(item.ReferencedSOPInstanceUID): item.get("FailureReason")
            for item in response.get("FailedSOPSequence", [])
        }
        stored = {
            str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", [])
        }
        answered = bool(failed or stored)  # an empty 2xx body: the status is all we have
        undelivered = [
            path
            for path, ds in datasets.items()
            if str(ds.SOPInstanceUID) in failed
            or (answered and str(ds.SOPInstanceUID) not in stored)
        ]
        reasons = sorted({f"0x{code:04X}" for code in failed.values() if code is not None})
        if failed:
            return (
                undelivered,
                f"STOW-RS failed SOP instance(s), reason {', '.join(reasons) or '?'}",
            )
        return undelivered, "STOW-RS response does not list the object(s) as stored"
