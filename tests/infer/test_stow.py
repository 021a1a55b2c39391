"""STOW-RS forwarding: multipart/related POSTs, response checking, retries, dead letters.

A small HTTP server on loopback plays a failing or partly failing DICOMweb server; real Orthanc
with its DICOMweb plugin (``pacs`` mark) plays the archive the results must reach.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from infer_dicom import make_cr, make_results
from listener_net import free_port, send, wait
from pacs_tools import Orthanc
from pydicom.uid import generate_uid

from medvl.infer.listener import ForwardConfig, Forwarder, ListenerConfig, StudyListener

TOKEN = "Bearer not-a-real-token"


class FakeStow:
    """An HTTP server answering each POST with the next ``(status, json body)`` of ``replies``."""

    def __init__(self, replies: list[tuple[int, dict | None]]) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests.append((self.path, dict(self.headers), body))
                status, reply = replies[min(len(fake.requests), len(replies)) - 1]
                data = json.dumps(reply).encode() if reply is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def parts(self, k: int) -> int:
        """How many DICOM objects request ``k`` carried."""
        _, headers, body = self.requests[k]
        boundary = headers["Content-Type"].split("boundary=")[1].strip('"').encode()
        return body.count(b"--" + boundary) - 1  # the closing delimiter is not a part

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sop_item(path: Path, failure: int | None = None) -> dict:
    ds = pydicom.dcmread(path)
    item = {
        "00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
        "00081155": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]},
    }
    if failure is not None:
        item["00081197"] = {"vr": "US", "Value": [failure]}
    return item


@pytest.fixture
def results(tmp_path: Path) -> list[Path]:
    make_cr(tmp_path / "cr.dcm", study_uid=generate_uid())
    return make_results(tmp_path / "cr.dcm", tmp_path / "res")  # a SEG and an SR


def stow(url: str, **changes) -> ForwardConfig:
    return ForwardConfig(url, **{"attempts": 3, "backoff_seconds": 0.5, **changes})


def test_server_error_is_retried_with_backoff_then_dead_lettered(results, tmp_path, monkeypatch):
    monkeypatch.setenv("STOW_TOKEN", TOKEN)
    server = FakeStow([(500, None)])
    sleeps: list[float] = []
    try:
        config = stow(server.url, auth_env="STOW_TOKEN")
        parked = Forwarder(config, tmp_path / "dl", sleep=sleeps.append).send(results, "k-v1")
    finally:
        server.close()
    assert parked == results and sleeps == [0.5, 1.0]
    assert len(server.requests) == 3  # the client's own retrying is off: ours only
    path, headers, _ = server.requests[0]
    assert path == "/dicom-web/studies" and headers["Authorization"] == TOKEN
    assert headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert server.parts(0) == 2
    note = json.loads((tmp_path / "dl" / "k-v1" / "reason.json").read_text())
    assert note["reason"] == "STOW-RS HTTP 500" and TOKEN not in json.dumps(note)
    assert sorted(p.name for p in (tmp_path / "dl" / "k-v1").glob("*.dcm")) == sorted(
        p.name for p in results
    )


def test_refused_connection_parks_everything(results, tmp_path) -> None:
    config = stow(f"http://127.0.0.1:{free_port()}/dicom-web", attempts=2, backoff_seconds=0.01)
    assert Forwarder(config, tmp_path / "dl").send(results, "k-v1") == results
    note = json.loads((tmp_path / "dl" / "k-v1" / "reason.json").read_text())
    assert note["reason"] == "STOW-RS request failed (ConnectionError)"


def test_failed_sop_sequence_resends_only_the_failed_object(results, tmp_path) -> None:
    seg, sr = results
    partial = {"00081198": {"vr": "SQ", "Value": [sop_item(sr, 0xC000)]}}
    partial["00081199"] = {"vr": "SQ", "Value": [sop_item(seg)]}
    server = FakeStow([(202, partial), (200, {"00081199": {"vr": "SQ", "Value": [sop_item(sr)]}})])
    sleeps: list[float] = []
    try:
        parked = Forwarder(stow(server.url), tmp_path / "dl", sleep=sleeps.append).send(
            results, "k-v1"
        )
    finally:
        server.close()
    assert parked == [] and sleeps == [0.5]
    assert [server.parts(k) for k in range(len(server.requests))] == [2, 1]
    assert not (tmp_path / "dl").exists()


def test_object_missing_from_the_response_is_not_delivered(results, tmp_path) -> None:
    seg, _ = results
    server = FakeStow([(200, {"00081199": {"vr": "SQ", "Value": [sop_item(seg)]}})])
    try:
        parked = Forwarder(stow(server.url, attempts=1), tmp_path / "dl").send(results, "k-v1")
    finally:
        server.close()
    assert parked == results[1:]
    note = json.loads((tmp_path / "dl" / "k-v1" / "reason.json").read_text())
    assert "does not list" in note["reason"]


def test_no_secret_in_the_url_and_a_named_variable_must_be_set(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="credentials"):
        Forwarder(stow("https://user:pw@pacs.example/dicom-web"), tmp_path)
    monkeypatch.delenv("MEDVL_NO_SUCH_VAR", raising=False)
    with pytest.raises(ValueError, match="MEDVL_NO_SUCH_VAR"):
        Forwarder(stow("https://pacs.example/dicom-web", auth_env="MEDVL_NO_SUCH_VAR"), tmp_path)


def orthanc_instance(orthanc: Orthanc, sop_uid: str) -> dict:
    """The Orthanc tags of the instance ``sop_uid`` (an empty dict while it is absent)."""
    found = orthanc.post("/tools/lookup", sop_uid.encode(), "text/plain")
    ids = [x["ID"] for x in found if x["Type"] == "Instance"]
    return orthanc.get(f"/instances/{ids[0]}/simplified-tags") if ids else {}


class Results:
    def analyse(self, files):
        return files

    def write(self, files, out_dir):
        return make_results(files[0], out_dir)


@pytest.mark.pacs
def test_listener_stows_results_into_orthanc(tmp_path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc", free_port(), dicomweb=True)
    config = ListenerConfig(
        port=free_port(),
        output_dir=tmp_path / "out",
        quiet_seconds=0.2,
        stow_url=orthanc.dicomweb_url,
    )
    listener = StudyListener(config, Results())
    listener.start()
    try:
        make_cr(tmp_path / "cr.dcm", study_uid=generate_uid())
        assert send(config.port, [pydicom.dcmread(tmp_path / "cr.dcm")]) == [0]
        assert wait(lambda: listener.stats.studies_done == 1, 60)
        sent = sorted(Path(config.output_dir).glob("results/*/v1/*.dcm"))
        tags = [orthanc_instance(orthanc, str(pydicom.dcmread(p).SOPInstanceUID)) for p in sent]
    finally:
        listener.stop()
        orthanc.stop()
    assert listener.stats.forwarded == 2 and listener.stats.dead_lettered == 0
    assert sorted(t.get("Modality") for t in tags) == ["SEG", "SR"]
    study = str(pydicom.dcmread(tmp_path / "cr.dcm").StudyInstanceUID)
    assert {t["StudyInstanceUID"] for t in tags} == {study}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--stow", "http://u:pw@127.0.0.1:1/dicom-web"], "credentials"),
        (["--stow", "http://127.0.0.1:1/dicom-web", "--stow-auth-env", "MEDVL_NO_SUCH_VAR"],
         "MEDVL_NO_SUCH_VAR"),
    ],
)  # fmt: skip
def test_listen_refuses_a_bad_stow_setting_with_exit_2(tmp_path, monkeypatch, extra, needle):
    from typer.testing import CliRunner

    from medvl.cli import app

    monkeypatch.delenv("MEDVL_NO_SUCH_VAR", raising=False)
    done = CliRunner().invoke(app, ["listen", "--out", str(tmp_path), *extra])
    assert done.exit_code == 2 and needle in done.output and "pw" not in done.output
    assert "Traceback" not in done.output
