"""End to end on a phantom study with tiny models: JSON, SEG and SR out, no PHI anywhere."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import highdicom as hd
import jsonschema
import pydicom
import pytest
from infer_dicom import PLANTED_ID, PLANTED_NAME, make_cr
from typer.testing import CliRunner

from medvl.cli import app
from medvl.data.phantom import generate_phantoms
from medvl.data.records import Study, read_manifest
from medvl.infer.export import export_study
from medvl.infer.json_result import result_schema
from medvl.infer.pipeline import InferConfig, InferencePipeline
from medvl.models.aligner import create_aligner
from medvl.models.sam import SamConfig, build_sam

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    aligner = create_aligner("tiny")
    aligner.save_pretrained(root / "aligner")
    build_sam(SamConfig(variant="tiny")).save_pretrained(root / "sam")
    return root / "aligner", root / "sam"


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phantom study folder with planted identifiers, a lateral, a junk file and an SR."""
    root = tmp_path_factory.mktemp("phantom")
    manifest = generate_phantoms(2, root / "corpus", seed=1, size=128, workers=0, progress=False)
    study = read_manifest(manifest, Study)[0]
    folder = root / "study"
    folder.mkdir()
    study_uid = None
    for k, image in enumerate(study.images):
        ds = pydicom.dcmread(image.path)
        ds.PatientName, ds.PatientID = PLANTED_NAME, PLANTED_ID
        ds.save_as(folder / f"im{k}.dcm")
        study_uid = ds.StudyInstanceUID
    make_cr(folder / "lateral.dcm", study_uid=study_uid, view="LL")
    (folder / "notes.txt").write_text(f"patient {PLANTED_NAME}")
    broken = folder / "truncated.dcm"
    shutil.copy(folder / "im0.dcm", broken)
    broken.write_bytes(broken.read_bytes()[:600])
    return folder


def test_study_to_json_seg_sr(
    models: tuple[Path, Path], phantom_study: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    aligner_dir, sam_dir = models
    pipeline = InferencePipeline(InferConfig(model=str(aligner_dir), sam=str(sam_dir)))
    result = pipeline.run_study(phantom_study)
    frontal = [p for p in phantom_study.iterdir() if p.name.startswith("im")]
    frontal_eligible = [
        p
        for p in frontal
        if pydicom.dcmread(p, stop_before_pixels=True).ViewPosition in ("PA", "AP")
    ]
    assert len(result.images) == len(frontal_eligible) >= 1
    skipped = {s.path.name: s.reason for s in result.skipped}
    assert "lateral.dcm" in skipped and "view LL" in skipped["lateral.dcm"]
    assert "notes.txt" in skipped and "truncated.dcm" in skipped
    assert all(len(image.findings) == 14 for image in result.images)
    assert all(image.segments[0].mask.shape == (128, 128) for image in result.images)

    written = export_study(result, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    jsonschema.validate(doc, result_schema())
    assert doc["model"]["aligner_sha256"] == pipeline.aligner.weights_sha256
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in frontal_eligible}
    segs = [hd.seg.segread(p) for p in written if p.name.startswith("seg_")]
    assert {
        s.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        for s in segs
    } == sources
    sr = hd.sr.srread(tmp_path / "out" / "findings_sr.dcm")
    evidence = {
        inst.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for inst in series.ReferencedSOPSequence
    }
    assert evidence == sources
    assert len(sr.content.get_image_measurement_groups()) == 14 * len(sources)
    text = (tmp_path / "out" / "result.json").read_text() + caplog.text
    assert PLANTED_NAME not in text and PLANTED_ID not in text


def test_cli_infer_exit_codes(
    models: tuple[Path, Path], phantom_study: Path, tmp_path: Path
) -> None:
    aligner_dir, _ = models
    runner = CliRunner()
    ok = runner.invoke(
        app,
        ["infer", str(phantom_study), "--model", str(aligner_dir), "--out", str(tmp_path / "a")],
    )
    assert ok.exit_code == 0, ok.output
    assert list((tmp_path / "a").glob("*/result.json"))
    assert PLANTED_NAME not in ok.output and PLANTED_ID not in ok.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "junk.bin").write_bytes(b"\x00" * 10)
    bad = runner.invoke(
        app, ["infer", str(empty), "--model", str(aligner_dir), "--out", str(tmp_path / "b")]
    )
    assert bad.exit_code == 1
    assert "no image could be analysed" in bad.output
    no_model = runner.invoke(app, ["infer", str(phantom_study), "--out", str(tmp_path / "c")])
    assert no_model.exit_code == 2
    assert "model" in no_model.output and "Traceback" not in no_model.output
