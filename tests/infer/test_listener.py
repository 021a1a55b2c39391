"""The storage SCP: good instances stored and processed per study, corrupt ones refused, no PHI."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pydicom
import pytest
from infer_dicom import PLANTED_ID, PLANTED_NAME, make_cr
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage, Verification

from medvl.infer.listener import ListenerConfig, StudyListener, parse_forward


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _datasets(tmp_path: Path) -> tuple[list[pydicom.Dataset], int]:
    """20 instances over 2 studies; 2 are corrupt (pixel data shorter than Rows x Columns)."""
    datasets = []
    studies = [generate_uid(), generate_uid()]
    for i in range(20):
        path = tmp_path / f"src{i}.dcm"
        make_cr(path, study_uid=studies[i % 2], seed=i)
        ds = pydicom.dcmread(path)
        if i in (3, 12):
            ds.PixelData = ds.PixelData[:100]
        datasets.append(ds)
    return datasets, 2


def test_listener_end_to_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: dict[str, int] = {}

    def processor(folder: Path) -> list[Path]:
        seen[folder.name] = len(list(folder.glob("*.dcm")))
        return []

    port = _free_port()
    config = ListenerConfig(port=port, output_dir=tmp_path / "out", quiet_seconds=0.5)
    listener = StudyListener(config, processor)
    listener.start()
    try:
        datasets, n_bad = _datasets(tmp_path)
        ae = AE(ae_title="SCU")
        ae.add_requested_context(ComputedRadiographyImageStorage)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDVL")
        assert assoc.is_established
        statuses = [assoc.send_c_store(ds).Status for ds in datasets]
        assoc.release()
        assert [i for i, s in enumerate(statuses) if s != 0] == [3, 12]
        assert _wait(lambda: listener.stats.studies_done == 2)
        assert sorted(seen.values()) == [9, 9]
        assert listener.stats.received == 18 and listener.stats.refused == n_bad

        assoc = ae.associate("127.0.0.1", port, ae_title="MEDVL")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        listener.stop(drain_timeout=5)
    assert len(list((tmp_path / "out" / "processed").iterdir())) == 2
    assert not list((tmp_path / "out" / "incoming").iterdir())
    text = caplog.text + " ".join(listener.stats.refusals)
    assert "PixelData" in text or "pixel data" in text.lower()
    assert PLANTED_NAME not in text and "Doe" not in text and PLANTED_ID not in text


def test_unfinished_studies_are_recovered_on_start(tmp_path: Path) -> None:
    incoming = tmp_path / "out" / "incoming" / "abc"
    incoming.mkdir(parents=True)
    make_cr(incoming / "x.dcm", study_uid=generate_uid())
    done: list[str] = []
    listener = StudyListener(
        ListenerConfig(port=_free_port(), output_dir=tmp_path / "out", quiet_seconds=0.1),
        lambda folder: done.append(folder.name) or [],
    )
    listener.start()
    try:
        assert _wait(lambda: done == ["abc"])
    finally:
        listener.stop(drain_timeout=5)


def test_processor_failure_keeps_study_and_listener(tmp_path: Path) -> None:
    def broken(folder: Path) -> list[Path]:
        raise RuntimeError(f"cannot read {PLANTED_NAME}")

    listener = StudyListener(
        ListenerConfig(port=_free_port(), output_dir=tmp_path / "out", quiet_seconds=0.1), broken
    )
    incoming = tmp_path / "out" / "incoming" / "s1"
    incoming.mkdir(parents=True)
    make_cr(incoming / "x.dcm", study_uid=generate_uid())
    listener.start()
    try:
        assert _wait(lambda: listener.stats.studies_failed == 1)
    finally:
        listener.stop(drain_timeout=2)
    assert (incoming / "x.dcm").exists()


def test_forward_destination_parsing() -> None:
    assert parse_forward("PACS@10.0.0.5:104") == ("PACS", "10.0.0.5", 104)
    with pytest.raises(ValueError, match="AE@host:port"):
        parse_forward("PACS:104")
