"""infer_folders: many study folders through one pipeline, one result folder per study."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from infer_dicom import make_cr
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medvl.cli import app
from medvl.infer.batch import StudyOutcome, infer_folders, study_folders
from medvl.infer.pipeline import InferConfig, InferencePipeline
from medvl.io.dicom import hash_uid
from medvl.models.aligner import create_aligner


@pytest.fixture
def studies(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """``studies/a`` (PA + lateral), ``studies/b`` (AP), ``studies/c`` (no DICOM); uid per name."""
    root = tmp_path / "studies"
    uids = {"a": generate_uid(), "b": generate_uid()}
    for name, views in (("a", ("PA", "LL")), ("b", ("AP",))):
        (root / name).mkdir(parents=True)
        for i, view in enumerate(views):
            make_cr(root / name / f"{i}.dcm", study_uid=uids[name], view=view, seed=i)
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("not an image")
    return root, uids


@pytest.fixture
def aligner_dir(tmp_path: Path) -> Path:
    create_aligner("tiny").save_pretrained(tmp_path / "aligner")
    return tmp_path / "aligner"


def test_every_folder_is_analysed_and_exported(studies, aligner_dir, tmp_path) -> None:
    root, uids = studies
    folders = study_folders(root, per_study=True)
    assert [f.name for f in folders] == ["a", "b", "c"]
    assert study_folders(root, per_study=False) == [root]
    pipeline = InferencePipeline(InferConfig(model=str(aligner_dir), device="cpu"))
    seen: list[StudyOutcome] = []
    summary = infer_folders(pipeline, folders, tmp_path / "out", on_study=seen.append)

    assert seen == summary.studies
    assert [(s.folder.name, s.analysed, s.skipped) for s in seen] == [
        ("a", 1, 1),
        ("b", 1, 0),
        ("c", 0, 1),
    ]
    assert summary.analysed == 2
    for outcome, name in zip(seen[:2], "ab", strict=True):
        assert outcome.output == tmp_path / "out" / hash_uid(uids[name])
        doc = json.loads((outcome.output / "result.json").read_text())
        assert len(doc["images"]) == 1
    assert any(p.name == "findings_sr.dcm" for p in seen[0].dicom_files)


def test_cli_prints_a_line_per_study(studies, aligner_dir, tmp_path) -> None:
    root, uids = studies
    out = tmp_path / "cli"
    done = CliRunner().invoke(
        app, ["infer", str(root), "--studies", "--model", str(aligner_dir), "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    lines = re.findall(r"(\w+): (\d+) analysed, (\d+) skipped, [\d.]+ s -> (\S+)", done.output)
    assert [line[:3] for line in lines] == [("a", "1", "1"), ("b", "1", "0"), ("c", "0", "1")]
    assert lines[0][3] == str(out / hash_uid(uids["a"]))
