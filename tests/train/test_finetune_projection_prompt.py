"""Modes projection and prompt_learning: what trains, that it learns, and the saved round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from medvl.config import from_dict
from medvl.data.records import Study, read_manifest
from medvl.infer.json_result import result_to_json
from medvl.infer.pipeline import InferConfig, InferencePipeline
from medvl.models import create_aligner
from medvl.models.classifier import load_classifier
from medvl.models.zeroshot import PromptBank
from medvl.train.finetune import FinetuneConfig
from medvl.train.finetune.steps import build_classifier, load_split, predict_proba, train

FINDINGS = ["Cardiomegaly", "Lung Opacity", "Atelectasis", "Support Devices"]
TRAINS = {  # aligner parameters each mode may change (everything else bit-identical)
    "projection": {"image_projection.weight", "text_projection.weight", "log_logit_scale"},
    "prompt_learning": set(),
}


def _config(manifest, out, mode: str) -> FinetuneConfig:
    return from_dict(
        FinetuneConfig,
        {
            "model": "tiny",
            "mode": mode,
            "output_dir": str(out),
            "data": {"manifest": str(manifest), "cache_dir": str(manifest.parent / "cache")},
            "val_split": "",
            "head": {"findings": FINDINGS},
            "train": {
                "max_steps": 6,
                "batch_size": 128,  # one full batch per step: the loss curve is not noise
                "lr": 1e-2,
                "warmup_steps": 0,
                "progress": False,
                "tensorboard": False,
            },
        },
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["projection", "prompt_learning"])
def test_only_the_modes_parameters_train_and_the_save_round_trips(small_phantoms, tmp_path, mode):
    base = tmp_path / "base"
    torch.manual_seed(0)
    create_aligner("tiny").save_pretrained(base)
    config = dataclasses.replace(_config(small_phantoms, tmp_path / mode, mode), model=str(base))
    aligner = create_aligner(str(base))
    before = {k: v.clone() for k, v in aligner.state_dict().items()}
    prompts = PromptBank.from_yaml(None).subset(FINDINGS)
    model = build_classifier(aligner, prompts, config)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    engine_cfg = dataclasses.replace(config.train, output_dir=tmp_path / "train")
    result = train(model, config, engine_cfg, 64)

    changed = {k for k, v in aligner.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == TRAINS[mode]
    assert result["final_loss"] < result["first_loss"]
    if mode == "prompt_learning":
        assert model.kind == "context"
        trained = {
            k for k, v in model.head.state_dict().items() if not torch.equal(v, head_before[k])
        }
        assert trained == {"context", "log_scale", "bias"}
        assert result["trainable_parameters"] == sum(p.numel() for p in model.head.parameters())
    else:  # the head is the zero-shot head of the new projections, not trained on labels
        assert result["trainable_parameters"] == 64 * 32 + 64 * 128 + 1
        assert not torch.equal(model.head.weight, head_before["weight"])

    model.save_pretrained(tmp_path / "saved", base=base, mode=mode)
    loaded = load_classifier(tmp_path / "saved")
    images = load_split(config, "test", 64)["image"]
    torch.testing.assert_close(
        predict_proba(loaded, images), predict_proba(model, images), rtol=0, atol=1e-6
    )
    study = read_manifest(small_phantoms, Study)[0]  # what `medvl infer --finetuned` runs
    pipeline = InferencePipeline(InferConfig(finetuned=str(tmp_path / "saved"), device="cpu"))
    done = result_to_json(pipeline.run_study([Path(image.path) for image in study.images]))
    assert [f["finding"] for f in done["study_findings"]] == FINDINGS
