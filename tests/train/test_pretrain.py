"""Domain-adaptive pretraining: report corpora, the MLM head, stage chaining and resume."""

from __future__ import annotations

import json

import pytest
import torch

from medvl.config import ConfigError, from_dict
from medvl.data.records import Study, write_manifest
from medvl.models import MedVLAligner
from medvl.train.engine import EngineConfig
from medvl.train.pretrain import PretrainConfig, StageConfig, pretrain
from medvl.train.pretrain.mlm import (
    TokenizedReports,
    build_mlm_model,
    load_report_corpus,
    mlm_collator,
    run_mlm_stage,
    split_corpus,
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


def test_corpus_from_a_folder_and_from_a_manifest(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    for i, text in enumerate(REPORTS[:6]):
        (folder / f"r{i}.txt").write_text(text)
    texts = load_report_corpus(folder)
    assert len(texts) == 6
    assert "XXXX" not in " ".join(texts)  # de-identification tokens cleaned as for the aligner

    studies = [
        Study(
            study_id=f"s{i}",
            patient_key=f"p{i}",
            source="test",
            report_text=t,
            split="test" if i == 0 else "train",
        )
        for i, t in enumerate(REPORTS[:6])
    ]
    manifest = write_manifest(tmp_path / "studies.jsonl", studies)
    assert len(load_report_corpus(manifest)) == 6
    assert len(load_report_corpus(manifest, exclude_splits=("test",))) == 5
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_report_corpus(tmp_path / "nowhere")


def test_iu_corpus_is_the_real_reports_without_test_split():
    texts = load_report_corpus("iu", exclude_splits=("test",))
    assert 3000 < len(texts) < 3955
    train, val = split_corpus(texts, 0.05)
    assert len(val) == pytest.approx(0.05 * len(texts), rel=0.3)
    assert split_corpus(texts, 0.05) == (train, val)


def test_mlm_head_shares_the_text_tower_and_scores_only_masked_tokens(tiny_aligner):
    text_model = tiny_aligner.text_tower.model
    mlm = build_mlm_model(text_model)
    assert mlm.encoder is text_model
    out_embed = mlm.mlm.get_output_embeddings().weight
    assert out_embed is text_model.get_input_embeddings().weight
    data = TokenizedReports(REPORTS[:8], tiny_aligner.tokenizer, 64)
    torch.manual_seed(0)
    batch = mlm_collator(tiny_aligner.tokenizer, 0.3)([data[i] for i in range(8)])
    mlm.eval()
    full = mlm.mlm(**batch).loss  # transformers' full-vocabulary forward
    sparse = mlm(batch["input_ids"], batch["attention_mask"], batch["labels"])
    torch.testing.assert_close(sparse, full, atol=1e-5, rtol=1e-5)


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
