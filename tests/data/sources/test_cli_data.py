"""``medvl data iu`` and ``medvl data adapter`` through the real CLI app."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from medvl.cli import app
from medvl.data.records import Failure, SegSample, Study, read_manifest

runner = CliRunner()


def test_iu_command_writes_studies(tmp_path) -> None:
    result = runner.invoke(app, ["data", "iu", "--out", str(tmp_path), "seed=3"])
    assert result.exit_code == 0, result.output
    assert "3955 studies, 7470 images" in result.output
    studies = read_manifest(tmp_path / "studies.jsonl", Study)
    assert len(studies) == 3955 and studies[0].study_id == "CXR1"
    [failure] = read_manifest(tmp_path / "failures.jsonl", Failure)
    assert failure.path == "CXR1000_IM-0003-1001"
    assert "seed: 3" in (tmp_path / "config.yaml").read_text()


def test_iu_command_rejects_bad_override(tmp_path) -> None:
    result = runner.invoke(app, ["data", "iu", "--out", str(tmp_path), "label_source=chexbert"])
    assert result.exit_code == 2
    assert "label_source" in result.output


def test_adapter_command_csv(tmp_path, make_raster) -> None:
    make_raster(tmp_path / "a.png")
    make_raster(tmp_path / "m.png")
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image,report,mask,Edema\na.png,IMPRESSION: Edema.,m.png,1\nb.png,x,,\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "adapter", "csv", str(csv_path), "--out", str(out),
                                 "mask_col=mask", "structure=edema"])  # fmt: skip
    assert result.exit_code == 0, result.output
    [study] = read_manifest(out / "studies.jsonl", Study)
    assert study.labels == {"Edema": 1} and study.sections == {"impression": "Edema."}
    [sample] = read_manifest(out / "seg_samples.jsonl", SegSample)
    assert sample.structure == "edema"
    assert (out / "failures.jsonl").is_file() and "1 inputs skipped" in result.output


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["data", "adapter", "nope", "."], 2, "unknown adapter"),
        (["data", "adapter", "chexpert", "/nonexistent"], 1, "train.csv"),
        (["data", "adapter", "siim_pneumothorax", ".", "include_empty=maybe"], 2, "include_empty"),
    ],
)
def test_adapter_command_errors(tmp_path, args, code, words) -> None:
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == code
    assert words in result.output


def test_phantom_flags_win_over_the_file_and_the_overrides(tmp_path) -> None:
    from medvl.cli.data import phantom_config

    path = tmp_path / "phantom.yaml"
    path.write_text("n_studies: 10\nseed: 4\nsize: 128\nlabel_source: labeler\n")
    cfg = phantom_config(path, ["n_studies=20", "workers=3"], n=30, size=96)
    assert (cfg.n_studies, cfg.seed, cfg.size, cfg.workers) == (30, 4, 96, 3)
    assert cfg.label_source == "labeler"
    assert phantom_config(None, ["seed=2"], seed=5).seed == 5


def test_phantom_command_rejects_bad_values_before_generating(tmp_path) -> None:
    result = runner.invoke(app, ["data", "phantom", "--out", str(tmp_path), "--size", "8"])
    assert result.exit_code == 2 and "size must be >= 64" in result.output
    result = runner.invoke(app, ["data", "phantom", "--out", str(tmp_path), "label_source=x"])
    assert result.exit_code == 2 and "label_source" in result.output
    assert not (tmp_path / "studies.jsonl").exists()
