"""The storage SCP: durable states, every SOP class and syntax accepted, supervised worker."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pydicom
import pytest
from infer_dicom import PLANTED_ID, PLANTED_NAME, make_cr, make_results
from listener_net import free_port, send, wait
from pydicom.uid import JPEGLSLossless, RLELossless, generate_uid

from medvl.infer.listener import (
    ListenerConfig,
    Retention,
    StudyListener,
    StudyStore,
    healthy,
    read_status,
)


class Recorder:
    """A processor that records what it analysed and writes real SEG + SR objects."""

    def __init__(self, fail_when=None, delay: float = 0.0) -> None:
        self.analysed: list[list[str]] = []
        self.fail_when = fail_when
        self.delay = delay

    def analyse(self, files: list[Path]) -> list[Path]:
        time.sleep(self.delay)
        self.analysed.append(sorted(p.name for p in files))
        if self.fail_when and self.fail_when(files):
            raise RuntimeError(f"cannot read {PLANTED_NAME}")
        return files

    def write(self, files: list[Path], out_dir: Path) -> list[Path]:
        images = [p for p in files if "PixelData" in pydicom.dcmread(p, stop_before_pixels=False)]
        outputs = make_results(images[0], out_dir) if images else []
        (out_dir / "result.json").write_text(json.dumps({"instances": len(files)}))
        return outputs


def _datasets(tmp_path: Path, study_uid: str, n: int, start: int = 0) -> list[pydicom.Dataset]:
    out = []
    for i in range(start, start + n):
        make_cr(tmp_path / f"src{i}.dcm", study_uid=study_uid, seed=i)
        out.append(pydicom.dcmread(tmp_path / f"src{i}.dcm"))
    return out


def _listener(tmp_path: Path, processor, **kw) -> StudyListener:
    config = ListenerConfig(port=free_port(), output_dir=tmp_path / "out", quiet_seconds=0.3)
    for key, value in kw.items():
        setattr(config, key, value)
    return StudyListener(config, processor)


def test_two_studies_corrupt_refused_no_phi(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    studies = [generate_uid(), generate_uid()]
    datasets = _datasets(tmp_path, studies[0], 5) + _datasets(tmp_path, studies[1], 5, 5)
    datasets[3].PixelData = datasets[3].PixelData[:100]
    recorder = Recorder()
    listener = _listener(tmp_path, recorder)
    listener.start()
    try:
        statuses = send(listener.config.port, datasets)
        assert [i for i, s in enumerate(statuses) if s != 0] == [3]
        assert wait(lambda: listener.stats.studies_done == 2)
        status = read_status(tmp_path / "out")
        assert wait(lambda: read_status(tmp_path / "out")["studies_done"] == 2, 5)
        assert healthy(read_status(tmp_path / "out"))
    finally:
        listener.stop()
    assert sorted(len(a) for a in recorder.analysed) == [4, 5]
    assert listener.stats.received == 9 and listener.stats.refused == 1
    status = read_status(tmp_path / "out")
    assert status["running"] is False and status["queue_depth"] == 0
    assert status["studies"]["done"] == 2 and status["last_error"] is None
    store = StudyStore(tmp_path / "out")
    assert {store.read(k).state for k in store.study_keys()} == {"done"}
    text = caplog.text + " ".join(listener.stats.refusals)
    assert "PixelData" in text
    assert PLANTED_NAME not in text and "Doe" not in text and PLANTED_ID not in text


def test_non_images_and_compressed_syntaxes_are_accepted(tmp_path: Path) -> None:
    study = generate_uid()
    images = _datasets(tmp_path, study, 3)
    images[1].compress(RLELossless)
    images[2].compress(JPEGLSLossless)
    sr = pydicom.dcmread(make_results(tmp_path / "src0.dcm", tmp_path / "sr")[-1])
    recorder = Recorder()
    listener = _listener(tmp_path, recorder)
    listener.start()
    try:
        contexts = [(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in [*images, sr]]
        assert send(listener.config.port, [*images, sr], contexts) == [0, 0, 0, 0]
        assert wait(lambda: listener.stats.studies_done == 1)
        # medvl's own SR routed back after the study is done: stored, no new version
        assert send(listener.config.port, [sr], contexts[-1:]) == [0]
        time.sleep(1.0)
    finally:
        listener.stop()
    assert len(recorder.analysed) == 1 and len(recorder.analysed[0]) == 3
    (key,) = listener.store.study_keys()
    assert listener.store.read(key).version == 1 and listener.store.read(key).state == "done"
    assert len(list((tmp_path / "out" / "studies" / key / "non-images").glob("*.dcm"))) == 1
    stored = {
        pydicom.dcmread(p).file_meta.TransferSyntaxUID
        for p in listener.store.instances_dir(key).glob("*.dcm")
    }
    assert {RLELossless, JPEGLSLossless} < stored


def test_one_failing_study_does_not_stop_the_next(tmp_path: Path, caplog) -> None:
    bad, good = generate_uid(), generate_uid()
    bad_set = _datasets(tmp_path, bad, 2)
    bad_names = None
    recorder = Recorder(fail_when=lambda files: len(files) == 2)
    listener = _listener(tmp_path, recorder)
    listener.start()
    try:
        send(listener.config.port, bad_set)
        assert wait(lambda: listener.stats.studies_failed == 1)
        send(listener.config.port, _datasets(tmp_path, good, 3, 2))
        assert wait(lambda: listener.stats.studies_done == 1)
    finally:
        listener.stop()
    assert bad_names is None
    assert listener.stats.last_error.endswith("RuntimeError")
    assert "failed: RuntimeError" in caplog.text and PLANTED_NAME not in caplog.text
    assert read_status(tmp_path / "out")["studies"]["failed"] == 1


def test_worker_death_is_visible(tmp_path: Path) -> None:
    listener = _listener(tmp_path, Recorder())
    listener.start()

    def explode(*_):
        raise OSError("disk gone")

    listener.store.take_complete = explode
    try:
        assert listener.dead.wait(5)
    finally:
        listener.stop()
    assert listener.stats.last_error == "worker died: OSError"
    assert not healthy(read_status(tmp_path / "out"))


def test_late_instances_make_a_new_version(tmp_path: Path) -> None:
    study = generate_uid()
    recorder = Recorder(delay=0.5)
    listener = _listener(tmp_path, recorder)
    listener.start()
    try:
        send(listener.config.port, _datasets(tmp_path, study, 3))
        assert wait(lambda: len(recorder.analysed) == 1)  # analysis under way
        send(listener.config.port, _datasets(tmp_path, study, 1, 3))  # arrives meanwhile
        assert wait(lambda: listener.stats.studies_done == 2)  # v1, then v2 with the late one
        send(listener.config.port, _datasets(tmp_path, study, 2, 4))  # a second batch
        assert wait(lambda: listener.stats.studies_done == 3)
    finally:
        listener.stop()
    assert [len(a) for a in recorder.analysed] == [3, 4, 6]
    (key,) = listener.store.study_keys()
    versions = sorted(p.name for p in (tmp_path / "out" / "results" / key).iterdir())
    assert versions == ["v1", "v2", "v3"]
    counts = [
        json.loads((tmp_path / f"out/results/{key}/{v}/result.json").read_text()) for v in versions
    ]
    assert [c["instances"] for c in counts] == [3, 4, 6]


def test_restart_resumes_and_cleans(tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "out")
    (store.studies / "deadbeefdeadbeef").mkdir()  # an empty folder a crash left behind
    (store.tmp / "x.part").write_bytes(b"half")
    make_cr(tmp_path / "a.dcm", study_uid=generate_uid())
    tmp = store.tmp / "a.part"
    tmp.write_bytes((tmp_path / "a.dcm").read_bytes())
    store.receive("0123456789abcdef", "00000000000000aa", tmp)
    store.take_complete(0.0)
    store.begin_analysis("0123456789abcdef")
    store.advance("0123456789abcdef", "analysed")  # then kill -9: the analysis is lost
    recorder = Recorder()
    listener = _listener(tmp_path, recorder)
    assert not (listener.store.studies / "deadbeefdeadbeef").exists()
    assert not list(listener.store.tmp.iterdir())
    assert listener.store.read("0123456789abcdef").state == "complete"
    listener.start()
    try:
        assert wait(lambda: listener.stats.studies_done == 1)
    finally:
        listener.stop()
    assert recorder.analysed == [["00000000000000aa.dcm"]]


def test_sigterm_like_stop_is_prompt(tmp_path: Path) -> None:
    listener = _listener(tmp_path, Recorder(delay=3.0))
    listener.start()
    send(listener.config.port, _datasets(tmp_path, generate_uid(), 1))
    assert wait(lambda: listener.store.counts()["complete"] == 1)
    started = time.monotonic()
    listener.stop(timeout=8)
    assert time.monotonic() - started < 8.5
    assert listener.store.read(listener.store.study_keys()[0]).state in ("complete", "written")


def test_retention_policies() -> None:
    assert Retention.parse("keep").days is None
    assert Retention.parse("delete").days == 0
    assert Retention.parse("days:3").days == 3
    for bad in ("days:-1", "forever", "days:x"):
        with pytest.raises(ValueError, match="keep, delete or days:N"):
            Retention.parse(bad)


def test_delete_retention_removes_instances_keeps_state(tmp_path: Path) -> None:
    listener = _listener(tmp_path, Recorder(), retention="delete")
    listener.start()
    try:
        send(listener.config.port, _datasets(tmp_path, generate_uid(), 2))
        assert wait(lambda: listener.stats.studies_done == 1)
    finally:
        listener.stop()
    (key,) = listener.store.study_keys()
    assert not listener.store.instances_dir(key).exists()
    assert listener.store.read(key).instances_purged
    assert (listener.store.result_dir(key, 1) / "result.json").is_file()
