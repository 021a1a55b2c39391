"""Domain-adaptive pretraining: report corpora, the MLM head, stage chaining and resume."""

from __future__ import annotations

import json

import pytest
import torch

from medvl.config import ConfigError, from_dict
from medvl.models import MedVLAligner
from medvl.train.engine import EngineConfig
from medvl.train.pretrain import PretrainConfig, StageConfig, pretrain
from medvl.train.pretrain.mlm import (
    run_mlm_stage,
)

REPORTS = [
    "Heart size is normal. The lungs are clear. No pleural effusion.",
    "Moderate cardiomegaly. Small bilateral pleural effusions.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "No acute cardiopulmonary abnormality. XXXX sternotomy wires.",
    "Small left apical pneumothorax. No effusion.",
    "Mild pulmonary edema with cardiomegaly.",
] * 5


def quiet(**overrides) -> EngineConfig:
    settings = dict(progress=False, tensorboard=False, log_every=1)
    settings.update(overrides)
    return EngineConfig(**settings)


@pytest.mark.slow
def test_mlm_loss_on_the_iu_reports_falls(tiny_aligner, tmp_path):
    stage = StageConfig(kind="mlm", corpus="iu", val_fraction=0.03)
    train = quiet(output_dir=tmp_path, max_steps=40, batch_size=16, lr=3e-3, warmup_steps=5)
    before_weights = tiny_aligner.text_tower.model.embeddings.word_embeddings.weight.clone()
    numbers = run_mlm_stage(tiny_aligner, stage, train)
    assert numbers["reports_train"] > 3000
    assert numbers["after"]["mlm_loss"] < numbers["before"]["mlm_loss"] - 1.5
    # the aligner's own text tower was trained (shared, not copied)
    assert not torch.equal(
        tiny_aligner.text_tower.model.embeddings.word_embeddings.weight, before_weights
    )


def test_stages_chain_save_and_skip_when_done(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    for i, text in enumerate(REPORTS):
        (folder / f"r{i:02d}.txt").write_text(text)
    mlm = {
        "kind": "mlm",
        "corpus": str(folder),
        "val_fraction": 0.2,
        "train": {"max_steps": 2, "batch_size": 4, "progress": False, "tensorboard": False},
    }
    config = from_dict(
        PretrainConfig,
        {
            "model": "tiny",
            "output_dir": str(tmp_path / "run"),
            "stages": [{**mlm, "name": "first"}, {**mlm, "name": "second"}],
        },
    )
    summary = pretrain(config)
    run = tmp_path / "run"
    assert [s["name"] for s in summary["stages"]] == ["first", "second"]
    for name in ("01-first", "02-second"):
        assert (run / name / "model" / "config.json").is_file()
        assert (run / name / "metrics.jsonl").is_file()
    final = MedVLAligner.from_pretrained(run / "model").state_dict()
    second = MedVLAligner.from_pretrained(run / "02-second" / "model").state_dict()
    assert all(torch.equal(final[k], second[k]) for k in final)
    assert (run / "config.yaml").is_file()
    saved = json.loads((run / "pretrain_summary.json").read_text())
    assert saved["stages"][0]["after"]["mlm_loss"] > 0

    again = pretrain(config)  # both stages complete: nothing retrains
    assert [s["name"] for s in again["stages"]] == ["first", "second"]
    reloaded = MedVLAligner.from_pretrained(run / "model").state_dict()
    assert all(torch.equal(reloaded[k], final[k]) for k in final)


def test_pretrain_config_is_validated():
    with pytest.raises(ConfigError, match="stage names must be unique"):
        from_dict(PretrainConfig, {"stages": [{"kind": "mlm"}, {"kind": "mlm"}]})
    with pytest.raises(ConfigError, match="kind"):
        from_dict(PretrainConfig, {"stages": [{"kind": "vqa"}]})
    with pytest.raises(ConfigError, match="stages\\[0\\].train.lrr|lrr"):
        from_dict(PretrainConfig, {"stages": [{"kind": "mlm", "train": {"lrr": 1.0}}]})


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("dapt_phantom", "pretrain"),
        ("dapt_phantom_tiny", "pretrain"),
        ("lora_findings", "finetune"),
        ("lora_findings_tiny", "finetune"),
    ],
)
def test_shipped_configs_load(name, kind):
    from pathlib import Path

    from medvl.config import load_config
    from medvl.train.finetune import FinetuneConfig

    path = Path(__file__).parents[2] / "configs" / f"{name}.yaml"
    config = load_config(PretrainConfig if kind == "pretrain" else FinetuneConfig, path)
    assert config.output_dir.parts[0] == "runs"


TWO_STAGES = {
    "stages": [
        {"kind": "mlm", "train": {"lr": 5e-5, "max_steps": 30}},
        {"kind": "contrastive", "train": {"lr": 3e-4, "max_steps": 60}},
    ]
}


def test_a_shared_train_section_reaches_every_stage():
    config = from_dict(PretrainConfig, {**TWO_STAGES, "train": {"lr": 1e-3}})
    assert [s.train.lr for s in config.stages] == [1e-3, 1e-3]
    assert [s.train.max_steps for s in config.stages] == [30, 60]  # other keys stay per stage
    config = from_dict(PretrainConfig, TWO_STAGES, ["train.lr=1e-4", "train.batch_size=4"])
    assert [(s.train.lr, s.train.batch_size) for s in config.stages] == [(1e-4, 4)] * 2
    default = from_dict(PretrainConfig, {}, ["train.max_steps=7"])  # the default mlm stage too
    assert [(s.name, s.train.max_steps) for s in default.stages] == [("mlm", 7)]


def test_one_stage_by_name_or_index_and_left_to_right():
    config = from_dict(
        PretrainConfig, TWO_STAGES, ["stages.contrastive.train.lr=1e-2", "stages.0.train.lr=2e-5"]
    )
    assert [s.train.lr for s in config.stages] == [2e-5, 1e-2]
    later_wins = from_dict(
        PretrainConfig, TWO_STAGES, ["train.lr=1e-4", "stages.mlm.train.lr=1e-5"]
    )
    assert [s.train.lr for s in later_wins.stages] == [1e-5, 1e-4]
    named = {"stages": [{"kind": "mlm", "name": "reports"}, {"kind": "contrastive"}]}
    renamed = from_dict(PretrainConfig, named, ["stages.reports.train.lr=3e-5"])
    assert renamed.stages[0].train.lr == 3e-5


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("stages.2.train.lr=1e-4", r"index 2 is out of range \(stages has 2 items\)"),
        ("stages.mae.train.lr=1e-4", r"no item of stages is named 'mae'.*'mlm', 'contrastive'"),
        ("stages.mlm.train.lrr=1e-4", r"unknown config key stages\[0\]\.train\.lrr"),
        ("train.output_dir=runs/x", r"train\.output_dir .*set output_dir instead"),
        ("stages.0.train.output_dir=runs/x", r"train\.output_dir .*set output_dir instead"),
    ],
)
def test_stage_override_errors_name_the_key(override, words):
    with pytest.raises(ConfigError, match=words) as caught:
        from_dict(PretrainConfig, TWO_STAGES, [override])
    assert "\n" not in str(caught.value)
