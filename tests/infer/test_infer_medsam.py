"""``medvl infer --sam`` with MedSAM weights: ``sam_preprocessing: medsam`` gives exactly the
masks of medvl's SAM predictor with MedSAM's preprocessing; the default is the SAM's own."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medvl.cli import app
from medvl.data.transforms import read_radiograph
from medvl.infer.pipeline import InferConfig, InferencePipeline
from medvl.models.aligner import create_aligner
from medvl.models.sam import SamConfig, create_sam
from medvl.models.sam.model import SamModel
from medvl.models.sam.predict import SamSegmenter

LUNGS = (0.06, 0.08, 0.94, 0.92)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny aligner directory and a MedSAM-style raw checkpoint (``{"model": state}``)."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    create_aligner("tiny").save_pretrained(root / "aligner")
    sam = SamModel(SamConfig(variant="tiny", img_size=64, seed=3))
    torch.save({"model": sam.state_dict()}, root / "medsam_tiny.pth")
    return root / "aligner", root / "medsam_tiny.pth"


def _expected(checkpoint: Path, path: Path, preprocessing: str) -> np.ndarray:
    image = read_radiograph(path)[0][0]
    h, w = image.shape
    box = np.array([[LUNGS[0] * w, LUNGS[1] * h, LUNGS[2] * w, LUNGS[3] * h]])
    segmenter = SamSegmenter(create_sam(checkpoint, preprocessing=preprocessing), device="cpu")
    return segmenter.predict(image, boxes=box).masks[0]


def test_infer_with_medsam_preprocessing_equals_sam_predict(models, cr_study) -> None:
    aligner_dir, checkpoint = models
    config = InferConfig(
        model=str(aligner_dir), sam=str(checkpoint), sam_preprocessing="medsam", device="cpu"
    )
    result = InferencePipeline(config).run_study(cr_study)
    assert len(result.images) == 2  # PA and AP; the lateral is skipped
    differs = 0
    for image in result.images:
        mask = image.segments[0].mask
        expected = _expected(checkpoint, image.source_path, "medsam")
        assert 0 < expected.sum() < expected.size  # a mask that can disagree
        assert np.array_equal(mask, expected)
        differs += int((mask != _expected(checkpoint, image.source_path, "sam")).sum())
    assert differs > 0  # SAM's own preprocessing would give other masks

    default = InferencePipeline(dataclasses.replace(config, sam_preprocessing=None))
    assert default.segmenter.model.config.preprocessing == "sam"  # raw checkpoint: SAM's


def test_saved_sam_directory_brings_its_preprocessing(models, tmp_path: Path) -> None:
    aligner_dir, checkpoint = models
    create_sam(checkpoint, preprocessing="medsam").save_pretrained(tmp_path / "medsam")
    config = InferConfig(model=str(aligner_dir), sam=str(tmp_path / "medsam"), device="cpu")
    assert InferencePipeline(config).segmenter.model.config.preprocessing == "medsam"
    config.sam_preprocessing = "sam"
    assert InferencePipeline(config).segmenter.model.config.preprocessing == "sam"


def test_cli_sam_preprocessing_option(models, cr_study, tmp_path: Path) -> None:
    aligner_dir, checkpoint = models
    args = ["infer", str(cr_study[0].parent), "--model", str(aligner_dir), "--sam"]
    runner = CliRunner()
    ok = runner.invoke(
        app, [*args, str(checkpoint), "--sam-preprocessing", "medsam", "--out", str(tmp_path)]
    )
    assert ok.exit_code == 0, ok.output
    assert "sam_preprocessing: medsam" in (tmp_path / "config.yaml").read_text()
    [result] = [json.loads(f.read_text()) for f in tmp_path.glob("*/result.json")]
    assert result["model"]["sam_sha256"] == create_sam(checkpoint).weights_sha256
    bad = runner.invoke(
        app, [*args, str(checkpoint), "--sam-preprocessing", "medsamx", "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2
    assert "sam_preprocessing: 'medsamx' is not one of ['sam', 'medsam']" in bad.output
