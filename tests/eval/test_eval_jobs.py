"""``medvl zeroshot`` / ``medvl evaluate`` end to end on a small PNG manifest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medvl.cli import app
from medvl.data.records import ImageRecord, Study, write_manifest
from medvl.findings import CARDIOMEGALY, CHEXPERT_14, NO_FINDING, PLEURAL_EFFUSION
from medvl.models import create_aligner

REPORTS = [
    ("The heart is enlarged.", {CARDIOMEGALY: 1, NO_FINDING: None}),
    ("No acute cardiopulmonary process.", {NO_FINDING: 1, CARDIOMEGALY: 0}),
    ("Small left pleural effusion. Heart size normal.", {PLEURAL_EFFUSION: 1, CARDIOMEGALY: 0}),
    ("Cardiomegaly with small effusions.", {CARDIOMEGALY: 1, PLEURAL_EFFUSION: 1}),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_job")
    rng = np.random.default_rng(0)
    studies = []
    for i in range(8):
        text, labels = REPORTS[i % len(REPORTS)]
        images = []
        for j in range(2 if i % 3 == 0 else 1):
            path = root / f"img{i}_{j}.png"
            Image.fromarray((rng.random((40, 48)) * 255).astype(np.uint8)).save(path)
            images.append(ImageRecord(path=str(path), image_id=f"i{i}_{j}", view_position="PA"))
        studies.append(
            Study(
                study_id=f"s{i}",
                patient_key=f"p{i}",
                source="test",
                report_text=text,
                labels=dict(labels),
                images=images,
                split="test" if i < 6 else "val",
            )
        )
    broken = root / "broken.dcm"
    broken.write_bytes(b"not a dicom file at all")
    studies[0].images.append(ImageRecord(path=str(broken), image_id="bad", view_position="PA"))
    manifest = write_manifest(root / "studies.jsonl", studies)
    torch.manual_seed(0)
    model_dir = root / "model"
    create_aligner("tiny").save_pretrained(model_dir)
    return {"root": root, "manifest": manifest, "model": model_dir}


def test_zeroshot_command_writes_results(workspace: dict[str, Path]) -> None:
    out = workspace["root"] / "zs"
    args = ["zeroshot", "--model", str(workspace["model"]), "--data", str(workspace["manifest"])]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "data.batch_size=4"])
    assert result.exit_code == 0, result.output
    assert "macro AUROC" in result.output
    with (out / "probabilities.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8  # 6 test studies, two with 2 images, the broken one skipped
    assert set(rows[0]) == {"image_id", "study_id", *CHEXPERT_14}
    assert all(0.0 <= float(r[CARDIOMEGALY]) <= 1.0 for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    saved = json.loads((workspace["model"] / "config.json").read_text())
    assert metrics["model"]["weights_sha256"] == saved["weights_sha256"]
    assert metrics["counts"] == {"images": 8, "studies": 6, "failures": 1}
    cardio = metrics["classification"]["per_finding"][CARDIOMEGALY]
    assert cardio["n"] == 8 and cardio["auroc"] is not None
    assert metrics["classification"]["per_finding"]["Fracture"]["auroc"] is None
    assert metrics["retrieval"]["image_to_text"]["n_candidates"] == 6
    failures = (out / "failures.jsonl").read_text().splitlines()
    assert len(failures) == 1 and "broken.dcm" in json.loads(failures[0])["path"]
    for name in ("roc.png", "similarity_heatmap.png", "config.yaml"):
        assert (out / name).stat().st_size > 0


def test_zeroshot_calibrates_on_validation_split(workspace: dict[str, Path]) -> None:
    from medvl.eval.jobs import ZeroShotJob, run_zeroshot

    out = workspace["root"] / "zs_cal"
    result = run_zeroshot(
        workspace["model"], workspace["manifest"], out, ZeroShotJob(calibrate_on="val")
    )
    assert (out / "calibration.json").is_file()
    fitted = result["calibration"]["fitted"]
    assert fitted[CARDIOMEGALY]["fitted"] is True  # val has one positive and one negative
    assert fitted["Fracture"]["fitted"] is False


def test_evaluate_command_writes_retrieval(workspace: dict[str, Path]) -> None:
    out = workspace["root"] / "ret"
    args = ["evaluate", "--model", str(workspace["model"]), "--data", str(workspace["manifest"])]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    retrieval = json.loads((out / "retrieval.json").read_text())["retrieval"]
    assert retrieval["image_to_text"]["n_queries"] == 8
    assert retrieval["text_to_image"]["n_queries"] == 6
    assert (out / "retrieval_examples.png").stat().st_size > 0


def test_errors_are_reported_without_traceback(workspace: dict[str, Path], tmp_path) -> None:
    args = ["zeroshot", "--model", str(tmp_path), "--data", str(workspace["manifest"])]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert f"{tmp_path}: no config.json; expected" in result.output
    args = ["zeroshot", "--model", str(workspace["model"]), "--data", str(workspace["manifest"])]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o"), "data.split=train"])
    assert result.exit_code == 1
    assert "no study has split 'train'" in result.output
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o"), "data.splitt=x"])
    assert result.exit_code == 2
    assert "splitt" in result.output
