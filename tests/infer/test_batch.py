"""infer_folders: studies grouped by StudyInstanceUID across folders, each failing alone."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pydicom
import pytest
from infer_dicom import PLANTED_ID, make_cr
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medvl.cli import app
from medvl.infer.batch import infer_folders, plan_studies, study_folders
from medvl.infer.pipeline import InferConfig, InferencePipeline
from medvl.io.dicom import hash_uid
from medvl.models.aligner import create_aligner


@pytest.fixture
def studies(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Folders named like accession numbers: study A split over two folders (with one instance
    copied into both), study B alone, an empty folder and a non-DICOM folder."""
    root = tmp_path / "studies"
    uids = {"A": generate_uid(), "B": generate_uid()}
    for name in ("ACC1001", "ACC1002", "ACC1003", "ACC1004", "ACC1005"):
        (root / name).mkdir(parents=True)
    make_cr(root / "ACC1001" / "Smith_John.dcm", study_uid=uids["A"], view="PA", seed=1)
    make_cr(root / "ACC1001" / "lat.dcm", study_uid=uids["A"], view="LL", seed=2)
    make_cr(root / "ACC1002" / "second.dcm", study_uid=uids["A"], view="AP", seed=3)
    shutil.copy(root / "ACC1001" / "Smith_John.dcm", root / "ACC1002" / "copy.dcm")
    make_cr(root / "ACC1003" / "b.dcm", study_uid=uids["B"], view="AP", seed=4)
    (root / "ACC1005" / "notes.txt").write_text("not an image")
    return root, uids


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> InferencePipeline:
    root = tmp_path_factory.mktemp("aligner")
    create_aligner("tiny").save_pretrained(root / "aligner")
    return InferencePipeline(InferConfig(model=str(root / "aligner"), device="cpu"))


def test_plan_groups_across_folders(studies) -> None:
    root, uids = studies
    plan = plan_studies(study_folders(root, per_study=True))
    assert set(plan.studies) == {hash_uid(uids["A"]), hash_uid(uids["B"])}
    assert len(plan.studies[hash_uid(uids["A"])]) == 4
    assert plan.folders[hash_uid(uids["A"])] == [0, 1]
    assert [(p.folder, p.reason) for p in plan.problems] == [
        (3, "empty folder"),
        (4, "no DICOM instance among 1 file(s)"),
    ]


def test_each_study_once_duplicates_reported(studies, pipeline, tmp_path) -> None:
    root, uids = studies
    summary = infer_folders(pipeline, study_folders(root, per_study=True), tmp_path / "out")
    by_key = {s.study: s for s in summary.studies}
    a, b = by_key[hash_uid(uids["A"])], by_key[hash_uid(uids["B"])]
    assert (a.analysed, a.skipped, b.analysed, b.skipped) == (2, 2, 1, 0)
    doc = json.loads((tmp_path / "out" / a.study / "result.json").read_text())
    reasons = sorted(s["reason"] for s in doc["skipped"])
    assert reasons[0].startswith("duplicate of instance") and "view LL" in reasons[1]
    assert len(list((tmp_path / "out" / a.study).glob("*.dcm"))) == 1  # one SR, no SEG (no SAM)
    listing = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [p["folder"] for p in listing["folder_problems"]] == [3, 4]
    text = json.dumps(listing) + json.dumps(doc)
    assert "ACC100" not in text and "Smith" not in text and PLANTED_ID not in text


def test_a_failing_study_fails_alone(studies, pipeline, tmp_path, monkeypatch) -> None:
    root, uids = studies
    real = pipeline.run_study

    def flaky(files, study_key=None):
        if study_key == hash_uid(uids["A"]):
            raise RuntimeError("boom")
        return real(files, study_key=study_key)

    monkeypatch.setattr(pipeline, "run_study", flaky)
    summary = infer_folders(pipeline, study_folders(root, per_study=True), tmp_path / "out")
    assert {s.study: s.error for s in summary.studies} == {
        hash_uid(uids["A"]): "RuntimeError",
        hash_uid(uids["B"]): None,
    }
    assert summary.analysed == 1


def test_dicom_with_tiff_preamble_is_read_as_dicom(pipeline, tmp_path) -> None:
    folder = tmp_path / "tiffish"
    folder.mkdir()
    path = folder / "x.dcm"
    ds = make_cr(path, study_uid=generate_uid())
    ds.preamble = b"II*\x00" + b"\x00" * 124
    ds.save_as(path, enforce_file_format=True)
    assert path.read_bytes()[:4] == b"II*\x00"
    result = pipeline.run_study(folder)
    assert len(result.images) == 1, [s.reason for s in result.skipped]
    assert pydicom.dcmread(path).SOPInstanceUID == ds.SOPInstanceUID


def test_cli_names_no_folder(studies, pipeline, tmp_path) -> None:
    root, uids = studies
    out = tmp_path / "cli"
    done = CliRunner().invoke(
        app, ["infer", str(root), "--studies", "--model", pipeline.config.model, "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    lines = re.findall(r"study (\w+) \(folders ([#\d,]+)\): (\d+) analysed", done.output)
    assert sorted(lines) == sorted(
        [(hash_uid(uids["A"]), "#0,#1", "2"), (hash_uid(uids["B"]), "#2", "1")]
    )
    assert "folder #3: skipped: empty folder" in done.output
    assert "ACC100" not in done.output and "Smith" not in done.output
