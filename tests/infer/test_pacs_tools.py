"""``medvl listen`` against real DICOM tools: dcmtk, dicom3tools' dciodvfy and Orthanc.

Everything on 127.0.0.1 with free ports; every process started here is stopped here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest
from infer_dicom import make_cr, make_results
from listener_net import wait
from pacs_tools import Listen, Orthanc, Storescp, dciodvfy, echo, medvl_exe, storescu, tool
from pydicom.uid import JPEG2000Lossless, generate_uid

from medvl.infer.codes import finding_code
from medvl.models.aligner import create_aligner
from medvl.models.sam import SamConfig, build_sam

pytestmark = pytest.mark.pacs


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    create_aligner("tiny").save_pretrained(root / "aligner")
    build_sam(SamConfig(variant="tiny")).save_pretrained(root / "sam")
    return root / "aligner", root / "sam"


def _compress(source: Path, target: Path, how: str) -> Path:
    """Compress with dcmtk (``dcmcrle``, ``dcmcjpls``, ``dcmcjpeg``) or pydicom (J2K)."""
    if how == "j2k":
        ds = pydicom.dcmread(source)
        ds.compress(JPEG2000Lossless)
        ds.save_as(target)
        return target
    program, *options = how.split()
    subprocess.run([tool(program), *options, str(source), str(target)], check=True, timeout=60)
    return target


# (tool + options, bits, storescu option proposing that syntax)
SYNTAXES = [
    ("dcmcrle", 12, "-xr"),
    ("dcmcjpls", 12, "-xt"),
    ("dcmcjpeg", 12, "-xs"),  # JPEG lossless, first-order prediction
    ("dcmcjpeg +eb", 8, "-xy"),  # JPEG baseline
    ("dcmcjpeg +ee", 12, "-xx"),  # JPEG extended
    ("j2k", 12, "-xv"),
]


def _study(folder: Path, index: int) -> list[Path]:
    """Two frontal images in one compressed syntax; study 0 also carries a returning medvl SR."""
    how, bits, _ = SYNTAXES[index % len(SYNTAXES)]
    uid = generate_uid()
    folder.mkdir(parents=True)
    files = []
    for k, view in enumerate(("PA", "AP")):
        raw = folder / f"raw{k}.dcm"
        make_cr(raw, study_uid=uid, view=view, bits=bits, seed=10 * index + k, rows=64, columns=64)
        files.append(_compress(raw, folder / f"im{k}.dcm", how))
        raw.unlink()
    return files


def test_storescu_compressed_parallel_senders_forward_to_storescp(models, tmp_path) -> None:
    pacs = Storescp(tmp_path / "pacs")
    listen = Listen(tmp_path / "out", models, forward=f"PACS@127.0.0.1:{pacs.port}")
    try:
        assert echo(listen.port, "MEDVL")
        studies = [_study(tmp_path / f"s{i}", i) for i in range(4)]
        returning = make_results(studies[0][0], tmp_path / "returning")  # SEG + SR (non-images)
        studies[0] += returning
        senders = [storescu(listen.port, files, SYNTAXES[i][2]) for i, files in enumerate(studies)]
        outputs = [p.communicate(timeout=120)[0].decode() for p in senders]
        assert [p.returncode for p in senders] == [0, 0, 0, 0], outputs
        assert wait(lambda: listen.status()["studies_done"] >= 4, 180), listen.output()
        expected = 4 * 3 + 1  # per study 2 SEG + 1 SR; study 0 again for its returning SEG/SR
        assert wait(lambda: len(pacs.received()) >= 4 * 3, 60), listen.output()
        status = listen.status()
        assert status["studies_failed"] == 0 and status["refused"] == 0
        assert status["received"] == 4 * 2 + len(returning)
        assert status["dead_lettered"] == 0 and status["worker_alive"]
        probe = subprocess.run(
            [medvl_exe(), "listen", "--status", "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0 and json.loads(probe.stdout)["queue_depth"] == 0
        code, seconds = listen.terminate()
        assert code == 0 and seconds < 10, listen.output()
    finally:
        listen.close()
        pacs.stop()
    stored = {
        str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.name)
        for p in (tmp_path / "out" / "studies").glob("*/instances/*.dcm")
    }
    assert {
        "RLE Lossless",
        "JPEG-LS Lossless Image Compression",
        "JPEG Baseline (Process 1)",
    } <= stored
    assert any(name.startswith("JPEG Lossless") for name in stored), stored
    received = pacs.received()
    kinds = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in received)
    assert kinds.count("SR") == 4 and kinds.count("SEG") == 8 and len(received) <= expected
    for path in received:
        errors, _ = dciodvfy(path)
        assert errors == [], (path.name, errors)


def _last_result(out: Path, images: int) -> Path | None:
    """The newest result.json of the only study, if it holds ``images`` images."""
    found = sorted((out / "results").glob("*/v*/result.json"), key=lambda p: int(p.parent.name[1:]))
    if found and len(json.loads(found[-1].read_text())["images"]) == images:
        return found[-1]
    return None


def test_kill_9_mid_study_loses_nothing(models, tmp_path) -> None:
    files = _study(tmp_path / "s", 0)
    third = tmp_path / "s" / "third.dcm"
    ds = make_cr(
        third, study_uid=pydicom.dcmread(files[0]).StudyInstanceUID, seed=99, rows=64, columns=64
    )
    listen = Listen(tmp_path / "out", models, forward=None, quiet=2.0)
    try:
        sender = storescu(listen.port, files, "-xr")
        sender.communicate(timeout=60)
        assert sender.returncode == 0
        listen.kill9()  # acknowledged, quiet period not over
    finally:
        listen.close()
    listen = Listen(tmp_path / "out", models, forward=None, port=listen.port, quiet=2.0)
    try:
        sender = storescu(listen.port, [third])
        sender.communicate(timeout=60)
        assert sender.returncode == 0
        # the restart resumes the first two (v1, if the model loaded after the quiet period) and
        # the late one re-opens the study: the last version covers all three.
        assert wait(lambda: _last_result(tmp_path / "out", images=3), 120), listen.output()
        code, _ = listen.terminate()
        assert code == 0
    finally:
        listen.close()
    result = _last_result(tmp_path / "out", images=3)
    assert not any(
        p.is_dir() and not any(p.iterdir()) for p in (tmp_path / "out" / "studies").iterdir()
    )
    assert str(ds.PatientName) not in result.read_text()


def test_orthanc_sends_a_study_and_gets_results_back(models, tmp_path) -> None:
    listen = None
    orthanc = None
    try:
        from listener_net import free_port

        port = free_port()
        orthanc = Orthanc(tmp_path / "orthanc", port)
        listen = Listen(
            tmp_path / "out", models, forward=f"ORTHANC@127.0.0.1:{orthanc.dicom}", port=port
        )
        uid = generate_uid()
        study_id = None
        for k, view in enumerate(("PA", "AP")):
            make_cr(tmp_path / f"o{k}.dcm", study_uid=uid, view=view, seed=k, rows=64, columns=64)
            study_id = orthanc.post("/instances", (tmp_path / f"o{k}.dcm").read_bytes())[
                "ParentStudy"
            ]
        orthanc.post(
            "/modalities/medvl/store",
            json.dumps({"Resources": [study_id], "Synchronous": True}).encode(),
            "application/json",
        )

        def modalities() -> list[str]:
            series = orthanc.get(f"/studies/{study_id}/series")
            return sorted(
                s["MainDicomTags"].get("Modality", "") for s in series for _ in s["Instances"]
            )

        assert wait(
            lambda: modalities().count("SR") == 1 and modalities().count("SEG") == 2, 120
        ), listen.output()
        assert modalities().count("CR") == 2
        # Orthanc now routes the whole study, medvl's own SEG and SR included: all accepted.
        orthanc.post(
            "/modalities/medvl/store",
            json.dumps({"Resources": [study_id], "Synchronous": True}).encode(),
            "application/json",
        )
        assert wait(lambda: listen.status()["received"] == 2 + 5, 60), listen.output()
        assert listen.status()["refused"] == 0
        sr = [
            s
            for s in orthanc.get(f"/studies/{study_id}/series")
            if s["MainDicomTags"].get("Modality") == "SR"
        ][0]
        assert sr["MainDicomTags"].get("SeriesDescription", "").startswith("medvl")
        code, seconds = listen.terminate()
        assert code == 0 and seconds < 10
    finally:
        if listen is not None:
            listen.close()
        if orthanc is not None:
            orthanc.stop()


def test_dciodvfy_seg_and_sr_zero_errors(tmp_path) -> None:
    """SEG and SR with every CheXpert-14 finding: 0 errors; the only warnings are dciodvfy not
    knowing the private 99MEDVL scheme, which the objects declare (PS3.3 8.2, C.12.1.1.4)."""
    from medvl import findings as F

    make_cr(tmp_path / "cr.dcm", study_uid=generate_uid())
    seg, sr = make_results(tmp_path / "cr.dcm", tmp_path / "out", findings=F.CHEXPERT_14)
    seg_errors, seg_warnings = dciodvfy(seg)
    sr_errors, sr_warnings = dciodvfy(sr)
    assert seg_errors == [] and seg_warnings == []
    assert sr_errors == []
    local = sum(code.scheme_designator == "99MEDVL" for code in map(finding_code, F.CHEXPERT_14))
    assert all("<99MEDVL>" in w for w in sr_warnings)
    assert len(sr_warnings) == 2 * local + 1  # each local finding twice, plus its declaration
