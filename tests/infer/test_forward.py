"""Forwarding: a context per SOP class sent, fallback syntax, retries with backoff, dead letters."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from infer_dicom import make_cr, make_results
from listener_net import free_port, send, wait
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage

from medvl.infer.listener import (
    ForwardConfig,
    Forwarder,
    ListenerConfig,
    StudyListener,
    parse_destination,
)


class Destination:
    """A pynetdicom storage SCP on loopback accepting ``sop_classes`` in ``syntaxes``."""

    def __init__(self, sop_classes, syntaxes=(ImplicitVRLittleEndian,)) -> None:
        self.port = free_port()
        self.received: list[str] = []
        ae = AE(ae_title="PACS")
        for sop_class in sop_classes:
            ae.add_supported_context(sop_class, list(syntaxes))

        def on_store(event: evt.Event) -> int:
            self.received.append(str(event.dataset.SOPClassUID))
            return 0

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def results(tmp_path: Path) -> list[Path]:
    make_cr(tmp_path / "cr.dcm", study_uid=generate_uid())
    return make_results(tmp_path / "cr.dcm", tmp_path / "res")


def test_seg_and_comprehensive_3d_sr_both_arrive(results, tmp_path) -> None:
    dest = Destination([SegmentationStorage, Comprehensive3DSRStorage])  # implicit VR only
    try:
        forwarder = Forwarder(ForwardConfig(f"PACS@127.0.0.1:{dest.port}"), tmp_path / "dl")
        assert forwarder.send(results, "k-v1") == []
    finally:
        dest.close()
    assert sorted(dest.received) == sorted([SegmentationStorage, Comprehensive3DSRStorage])
    assert not (tmp_path / "dl").exists()


def test_refused_class_is_retried_then_dead_lettered(results, tmp_path) -> None:
    dest = Destination([SegmentationStorage])
    sleeps: list[float] = []
    try:
        config = ForwardConfig(f"PACS@127.0.0.1:{dest.port}", attempts=3, backoff_seconds=0.5)
        parked = Forwarder(config, tmp_path / "dl", sleep=sleeps.append).send(results, "k-v1")
    finally:
        dest.close()
    assert sleeps == [0.5, 1.0]
    assert [pydicom.dcmread(p).SOPClassUID for p in parked] == [Comprehensive3DSRStorage]
    assert dest.received == [SegmentationStorage]  # delivered once, not resent on retries
    note = json.loads((tmp_path / "dl" / "k-v1" / "reason.json").read_text())
    assert "presentation context" in note["reason"]
    assert (tmp_path / "dl" / "k-v1" / parked[0].name).is_file()


def test_unreachable_destination_parks_everything(results, tmp_path) -> None:
    config = ForwardConfig(f"PACS@127.0.0.1:{free_port()}", attempts=2, backoff_seconds=0.01)
    parked = Forwarder(config, tmp_path / "dl").send(results, "k-v1")
    assert parked == results
    assert len(list((tmp_path / "dl" / "k-v1").glob("*.dcm"))) == 2


def test_destination_parsing() -> None:
    assert parse_destination("PACS@10.0.0.5:104") == ("PACS", "10.0.0.5", 104)
    for bad in ("PACS:104", "@h:1", "PACS@h:port"):
        with pytest.raises(ValueError, match="AE@host:port"):
            parse_destination(bad)


class RealResults:
    def analyse(self, files):
        return files

    def write(self, files, out_dir):
        outputs = make_results(files[0], out_dir)
        (out_dir / "result.json").write_text("{}")
        return outputs


def test_listener_forwards_every_study(tmp_path) -> None:
    dest = Destination([SegmentationStorage, Comprehensive3DSRStorage])
    config = ListenerConfig(
        port=free_port(),
        output_dir=tmp_path / "out",
        quiet_seconds=0.2,
        forward=f"PACS@127.0.0.1:{dest.port}",
    )
    listener = StudyListener(config, RealResults())
    listener.start()
    try:
        for k in range(2):
            make_cr(tmp_path / f"s{k}.dcm", study_uid=generate_uid(), seed=k)
            assert send(config.port, [pydicom.dcmread(tmp_path / f"s{k}.dcm")]) == [0]
            assert wait(lambda k=k: listener.stats.studies_done == k + 1)
    finally:
        listener.stop()
        dest.close()
    assert listener.stats.forwarded == 4 and listener.stats.dead_lettered == 0
    assert sorted(dest.received) == sorted([SegmentationStorage, Comprehensive3DSRStorage] * 2)
