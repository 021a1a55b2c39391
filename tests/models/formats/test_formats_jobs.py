"""``medvl zeroshot`` and ``medvl evaluate`` start from a CLIP or SigLIP directory as they are."""

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
from medvl.findings import CARDIOMEGALY, CHEXPERT_14, NO_FINDING
from medvl.models import create_aligner
from medvl.models.zeroshot import PromptBank, ZeroShotClassifier

REPORTS = [("The heart is enlarged.", {CARDIOMEGALY: 1}), ("No acute process.", {NO_FINDING: 1})]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, gray_images: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("foreign_jobs")
    studies = []
    for i, pixels in enumerate(gray_images):
        path = root / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        text, labels = REPORTS[i % 2]
        image = ImageRecord(path=str(path), image_id=f"i{i}", view_position="PA")
        studies.append(
            Study(
                study_id=f"s{i}",
                patient_key=f"p{i}",
                source="test",
                report_text=text,
                labels=dict(labels),
                images=[image],
                split="test",
            )
        )
    return write_manifest(root / "studies.jsonl", studies)


@pytest.mark.parametrize("family", ["hf_clip", "hf_siglip"])
def test_zeroshot_scores_a_foreign_directory_like_the_library(
    family: str,
    manifest: Path,
    gray_images: np.ndarray,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    model_dir = request.getfixturevalue(f"{family}_dir")
    out = tmp_path / "zs"
    args = ["zeroshot", "--model", str(model_dir), "--data", str(manifest), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with (out / "probabilities.csv").open() as fh:
        rows = {r["image_id"]: r for r in csv.DictReader(fh)}
    classifier = ZeroShotClassifier(create_aligner(model_dir), PromptBank.from_yaml())
    pixels = torch.from_numpy(gray_images.astype(np.float32) / 255.0)[:, None]
    with torch.no_grad():
        expected = classifier.predict_proba(pixels).numpy()
    got = np.array([[float(rows[f"i{i}"][f]) for f in CHEXPERT_14] for i in range(2)])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert json.loads((out / "metrics.json").read_text())["counts"]["images"] == 2


def test_evaluate_retrieves_with_a_clip_directory(
    hf_clip_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ev"
    args = ["evaluate", "--model", str(hf_clip_dir), "--data", str(manifest), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "retrieval.json").read_text())
    assert metrics["retrieval"]["image_to_text"]["n_candidates"] == 2
    assert metrics["model"]["path"] == str(hf_clip_dir)
