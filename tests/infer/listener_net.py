"""Network helpers for listener tests: free loopback ports, a C-STORE sender, polling."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def send(port: int, datasets: list[pydicom.Dataset], contexts=None, ae_title="MEDVL") -> list:
    """C-STORE ``datasets`` on one association; the status of each (None: not sent)."""
    ae = AE(ae_title="SCU")
    if contexts is None:
        contexts = {(str(ds.SOPClassUID), ExplicitVRLittleEndian) for ds in datasets}
    for sop_class, syntax in dict.fromkeys(contexts):
        syntaxes = (
            [syntax] if syntax != ExplicitVRLittleEndian else [syntax, ImplicitVRLittleEndian]
        )
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established
    try:
        return [getattr(assoc.send_c_store(ds), "Status", None) for ds in datasets]
    finally:
        assoc.release()
