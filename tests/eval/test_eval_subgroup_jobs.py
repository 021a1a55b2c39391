"""``medvl zeroshot`` and ``medvl finetune`` with ``subgroups``: the JSON section and the CSV."""

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
from medvl.findings import CARDIOMEGALY, NO_FINDING
from medvl.models import create_aligner


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("subgroup_job")
    rng = np.random.default_rng(0)
    studies = []
    for i in range(16):
        path = root / f"img{i}.png"
        Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(path)
        record = ImageRecord(
            path=str(path),
            image_id=f"i{i}",
            view_position="PA" if i % 4 else "AP",
            sex="MF"[i % 2],
            age_band="60-69",
            manufacturer="Acme" if i < 12 else "Other",
        )
        labels = {CARDIOMEGALY: i % 2, NO_FINDING: 1 - i % 2}
        studies.append(
            Study(
                f"s{i}", f"p{i}", "test", "The heart.", labels=labels, images=[record], split="test"
            )
        )
    manifest = write_manifest(root / "studies.jsonl", studies)
    torch.manual_seed(0)
    create_aligner("tiny").save_pretrained(root / "model")
    return {"root": root, "manifest": manifest, "model": root / "model"}


def _check(section: dict, rows: list[dict]) -> None:
    assert section["fields"] == ["sex", "manufacturer", "view"]
    values = {(g["field"], g["value"]): g for g in section["groups"]}
    assert (
        values[("manufacturer", "Acme")]["n"] == 12 and values[("manufacturer", "Other")]["n"] == 4
    )
    sex = values[("sex", "M")]["per_finding"][CARDIOMEGALY]
    assert (sex["positives"], sex["status"], sex["auroc"]) == (0, "too few positives", None)
    assert values[("sex", "M")]["macro_auroc"] is None  # one class in each sex: never scored
    acme = values[("manufacturer", "Acme")]
    assert acme["per_finding"][CARDIOMEGALY]["positives"] == 6 and acme["macro_auroc"] is not None
    worst = section["worst"]
    assert worst["gap"] == max(g["gap"] for g in section["groups"] if g["gap"] is not None)
    assert {(r["field"], r["value"]) for r in rows if r["finding"] == "macro"} == set(values)


def test_zeroshot_writes_subgroups(workspace: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "zeroshot.yaml"
    config.write_text("subgroups: [sex, manufacturer, view]\nsubgroup_min_positives: 2\n")
    out = tmp_path / "zs"
    args = ["zeroshot", "--model", str(workspace["model"]), "--data", str(workspace["manifest"])]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    section = json.loads((out / "metrics.json").read_text())["subgroups"]
    _check(section, list(csv.DictReader((out / "subgroups.csv").open())))


def test_an_unknown_subgroup_field_is_a_usage_error(workspace, tmp_path) -> None:
    args = ["zeroshot", "--model", str(workspace["model"]), "--data", str(workspace["manifest"])]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o"), "subgroups=[site]"])
    assert result.exit_code == 2
    assert "'site' is not one of" in result.output


@pytest.mark.slow
def test_finetune_writes_subgroups(workspace: dict[str, Path], tmp_path: Path) -> None:
    from medvl.config import from_dict
    from medvl.train.finetune import FinetuneConfig, finetune

    config = from_dict(
        FinetuneConfig,
        {
            "model": str(workspace["model"]),
            "mode": "linear_probe",
            "output_dir": str(tmp_path / "ft"),
            "data": {"manifest": str(workspace["manifest"]), "views": []},
            "train_split": "test",
            "val_split": "",
            "head": {"findings": [CARDIOMEGALY, NO_FINDING]},
            "subgroups": ["sex", "manufacturer", "view"],
            "subgroup_min_positives": 2,
            "train": {"max_steps": 2, "batch_size": 8, "progress": False, "tensorboard": False},
        },
    )
    finetune(config)
    section = json.loads((tmp_path / "ft" / "metrics.json").read_text())["metrics"]["subgroups"]
    _check(section, list(csv.DictReader((tmp_path / "ft" / "subgroups.csv").open())))


def test_evaluate_writes_retrieval_subgroups(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ev"
    args = ["evaluate", "--model", str(workspace["model"]), "--data", str(workspace["manifest"])]
    overrides = ["subgroups=[manufacturer]", "subgroup_min_images=5"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), *overrides])
    assert result.exit_code == 0, result.output
    section = json.loads((out / "retrieval.json").read_text())["subgroups"]
    groups = {g["value"]: g for g in section["groups"]}
    assert groups["Acme"]["n"] == 12 and groups["Acme"]["image_to_text"]["n_queries"] == 12
    assert groups["Other"]["status"] == "too few images" and groups["Other"]["gap"] is None
    assert section["worst"]["value"] == "Acme"
    rows = list(csv.DictReader((out / "subgroups.csv").open()))
    assert [r["value"] for r in rows] == ["Acme", "Other"] and rows[1]["R@1"] == ""
