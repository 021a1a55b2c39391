"""The ``image_ssl`` pretraining stage: MAE and SimCLR on phantom images, config errors, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medvl.cli import app
from medvl.config import ConfigError, from_dict
from medvl.data.records import Study, read_manifest
from medvl.models import MedVLAligner, create_aligner
from medvl.train.pretrain import PretrainConfig, pretrain
from medvl.train.pretrain import image_ssl as image_ssl_module

ROOT = Path(__file__).resolve().parents[2]
QUIET = {"progress": False, "tensorboard": False, "log_every": 1}
SMALL_VIT = {"arch": "vit_tiny", "patch_size": 16, "vit_depth": 2, "vit_width": 64, "vit_heads": 2}


def ssl_job(tmp_path, stage: dict, train: dict, image: dict | None = None) -> PretrainConfig:
    return from_dict(
        PretrainConfig,
        {
            "model": "tiny",
            "image": image or {},
            "output_dir": str(tmp_path / "run"),
            "stages": [
                {"kind": "image_ssl", "val_fraction": 0.25, **stage, "train": {**QUIET, **train}}
            ],  # fmt: skip
        },
    )


def changed_keys(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_mae_stage_loss_falls_and_only_the_image_tower_changes(small_phantoms, tmp_path):
    torch.manual_seed(0)
    start = create_aligner("tiny", **{f"image.{k}": v for k, v in SMALL_VIT.items()})
    before = {k: v.clone() for k, v in start.state_dict().items()}
    config = ssl_job(
        tmp_path,
        {"method": "mae", "data": {"manifest": str(small_phantoms)}},
        {"max_steps": 30, "batch_size": 8, "lr": 2e-3, "warmup_steps": 3},
        SMALL_VIT,
    )
    summary = pretrain(config)
    stage = summary["stages"][0]
    assert stage["method"] == "mae" and stage["steps"] == 30
    seen = [
        image
        for study in read_manifest(small_phantoms, Study)
        if study.split != "test"  # exclude_splits: test images are never seen
        for image in study.images
        if image.view_position in ("PA", "AP")
    ]
    assert stage["images_train"] + stage["images_val"] == len(seen)
    assert stage["after"]["ssl_loss"] < stage["before"]["ssl_loss"] - 0.2, stage
    saved = MedVLAligner.from_pretrained(tmp_path / "run" / "model")  # loads as before
    after = saved.state_dict()
    assert set(after) == set(before)  # the decoder is not saved with the aligner
    changed = changed_keys(before, after)
    assert changed and all(k.startswith("image_tower.") for k in changed), sorted(changed)
    assert "image_tower.model.blocks.0.attn.qkv.weight" in changed


@pytest.mark.slow
def test_simclr_on_a_dicom_folder_without_reports(small_phantoms, tmp_path):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for study in read_manifest(small_phantoms, Study):
        for image in study.images:  # the DICOM files alone, no manifest, no reports
            shutil.copy(image.path, folder / f"{image.image_id}.dcm")
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in create_aligner("tiny").state_dict().items()}
    config = ssl_job(
        tmp_path,
        {"method": "simclr", "image_folder": str(folder), "data": {"views": []}},
        {"max_steps": 40, "batch_size": 16, "lr": 3e-3, "warmup_steps": 4},
    )
    stage = pretrain(config)["stages"][0]
    run = tmp_path / "run" / "01-image_ssl"
    assert (run / "ingest" / "images.jsonl").is_file()
    assert (run / "tensor_cache").is_dir()  # the cache sits in the stage, not in the folder
    assert not (folder / "tensor_cache").exists()
    assert stage["images_train"] + stage["images_val"] == len(list(folder.iterdir()))
    assert stage["after"]["ssl_loss"] < stage["before"]["ssl_loss"] - 0.1, stage
    after = MedVLAligner.from_pretrained(tmp_path / "run" / "model").state_dict()
    changed = changed_keys(before, after)
    assert changed and all(k.startswith("image_tower.") for k in changed), sorted(changed)


def test_mae_on_a_cnn_tower_is_one_config_error(small_phantoms, tmp_path):
    config = ssl_job(
        tmp_path, {"method": "mae", "data": {"manifest": str(small_phantoms)}}, {"max_steps": 2}
    )
    with pytest.raises(ConfigError, match=r"stages\.image_ssl\.method: method mae needs the ViT"):
        pretrain(config)
    assert not (tmp_path / "run" / "01-image_ssl").exists()  # refused before anything trained
    yaml = tmp_path / "job.yaml"
    yaml.write_text(
        f"model: tiny\noutput_dir: {tmp_path / 'cli'}\nstages:\n  - kind: image_ssl\n"
        f"    method: mae\n    data: {{manifest: {small_phantoms}}}\n"
    )
    result = CliRunner().invoke(app, ["pretrain", "-c", str(yaml)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config error" in lines[0] and "use method: simclr" in lines[0]
    with pytest.raises(ConfigError, match="needs images"):
        from_dict(PretrainConfig, {"stages": [{"kind": "image_ssl"}]})
    with pytest.raises(ConfigError, match="method"):
        from_dict(PretrainConfig, {"stages": [{"kind": "image_ssl", "method": "dino"}]})


def test_an_interrupted_stage_resumes_on_the_same_trajectory(small_phantoms, tmp_path, monkeypatch):
    stage = {"method": "simclr", "data": {"manifest": str(small_phantoms)}}
    train = {"max_steps": 6, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 3}
    full = pretrain(ssl_job(tmp_path / "full", stage, train))["stages"][0]

    real, calls = image_ssl_module.ssl_loss, []

    def crashing(model, batch):
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == 5:
                raise RuntimeError("simulated crash")
        return real(model, batch)

    monkeypatch.setattr(image_ssl_module, "ssl_loss", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(ssl_job(tmp_path / "split", stage, train))
    monkeypatch.setattr(image_ssl_module, "ssl_loss", real)
    run = tmp_path / "split" / "run"
    assert not (run / "01-image_ssl" / "model").exists()
    resumed = pretrain(ssl_job(tmp_path / "split", stage, train))["stages"][0]
    assert resumed["final_loss"] == pytest.approx(full["final_loss"], abs=1e-6, rel=0)
    rows = [json.loads(line) for line in (run / "01-image_ssl" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 7))
    one = MedVLAligner.from_pretrained(tmp_path / "full" / "run" / "model").state_dict()
    two = MedVLAligner.from_pretrained(run / "model").state_dict()
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)


@pytest.mark.slow
def test_the_readme_section_runs_as_written(readme_code, small_phantoms, tmp_path):
    block = readme_code("### Image self-supervised DAPT", "bash")
    commands = [line.split("  #", 1)[0].split() for line in block.splitlines() if line.strip()]
    assert [c[:4] for c in commands] == [
        ["medvl", "pretrain", "-c", "configs/dapt_phantom_ssl.yaml"]
    ] * 2
    shrink = [
        f"output_dir={tmp_path / 'readme'}",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.eval_every=0",
        f"stages.image_ssl.data.manifest={small_phantoms}",
        f"stages.contrastive.data.manifest={small_phantoms}",
        "stages.image_ssl.data.phantom=null",
        "stages.contrastive.data.phantom=null",
    ]
    first = CliRunner().invoke(app, [*commands[0][1:], *shrink])
    assert first.exit_code == 0, first.output
    assert "image_ssl: ssl_loss" in first.output  # the CLI shows the held-out loss
    summary = json.loads((tmp_path / "readme" / "pretrain_summary.json").read_text())
    assert [s["kind"] for s in summary["stages"]] == ["image_ssl", "contrastive"]
    assert summary["stages"][0]["method"] == "simclr"
    from medvl.cli.common import job_config

    vit = job_config(PretrainConfig, ROOT / commands[1][3], commands[1][4:])
    assert vit.model == "vit_tiny-minilm" and vit.stages[0].method == "mae"
    assert str(vit.stages[0].image_folder) == "/data/unreported_cxr"
