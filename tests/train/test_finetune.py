"""Fine-tuning modes on a small phantom set: what trains, what is saved, merge-lora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medvl.cli import app
from medvl.config import ConfigError, from_dict
from medvl.data.records import Study, read_manifest
from medvl.infer.json_result import result_to_json
from medvl.infer.pipeline import InferConfig, InferencePipeline
from medvl.models import MedVLAligner, create_aligner
from medvl.models.classifier import load_classifier
from medvl.models.hub import sha256_tensors
from medvl.train.finetune import FinetuneConfig, finetune
from medvl.train.finetune.steps import evaluate_classifier, load_split

FINDINGS = ["Cardiomegaly", "Lung Opacity", "Atelectasis", "Support Devices"]


def job(manifest, out, mode, **extra) -> FinetuneConfig:
    data = {
        "model": "tiny",
        "mode": mode,
        "output_dir": str(out),
        "data": {"manifest": str(manifest), "cache_dir": str(manifest.parent / "cache")},
        "val_split": "",
        "eval_split": "train",  # 40 studies: too few to hold any out
        "head": {"findings": FINDINGS},
        "lora": {"r": 2, "alpha": 4},
        "freeze": {"strategy": "two_stage", "head_steps": 2, "top_blocks": 1},
        "train": {
            "max_steps": 3,
            "batch_size": 8,
            "lr": 1e-3,
            "progress": False,
            "tensorboard": False,
        },
    }
    data.update(extra)
    return from_dict(FinetuneConfig, data)


@pytest.mark.slow
def test_every_mode_runs_and_saves_what_it_trained(small_phantoms, tmp_path):
    results = {}
    for mode in ("zero_shot", "linear_probe", "lora", "partial", "full"):
        out = tmp_path / mode
        results[mode] = finetune(job(small_phantoms, out, mode))
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["mode"] == mode and 0.0 <= saved["macro_auroc"] <= 1.0
        assert set(saved["metrics"]["per_finding"]) == set(FINDINGS)
        assert (out / "config.yaml").is_file() and (out / "head.safetensors").is_file()
        assert json.loads((out / "config.json").read_text())["mode"] == mode
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "full" / "model" / "model.safetensors").is_file()
    counts = {m: r["trainable_parameters"] for m, r in results.items()}
    head = 64 * len(FINDINGS) + len(FINDINGS)  # linear head on the 64-d joint space
    assert counts["zero_shot"] == 0
    assert counts["linear_probe"] == head
    assert head < counts["lora"] < counts["partial"] < counts["full"]
    # the untrained zero-shot head and zero-shot mode agree
    assert results["zero_shot"]["train_examples"] == 0


@pytest.mark.slow
def test_few_shot_and_merge_lora(small_phantoms, tmp_path):
    config = job(small_phantoms, tmp_path / "lora", "lora", few_shot={"k": 2, "seed": 0})
    result = finetune(config)
    assert 0 < result["train_examples"] <= 2 * 2 * len(FINDINGS)
    again = finetune(job(small_phantoms, tmp_path / "lora2", "lora", few_shot={"k": 2, "seed": 0}))
    assert again["train_examples"] == result["train_examples"]

    base = tmp_path / "base"
    torch.manual_seed(config.train.seed)
    create_aligner("tiny").save_pretrained(base)
    out = tmp_path / "merged"
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            "merge-lora",
            "--model",
            str(base),
            "--adapter",
            str(tmp_path / "lora" / "adapter"),
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.output
    merged = MedVLAligner.from_pretrained(out)
    assert not any("lora_" in k for k in merged.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "kind"), [("lora", "prompt"), ("partial", "linear")])
def test_saved_run_loads_for_inference_with_the_same_numbers(small_phantoms, tmp_path, mode, kind):
    base = tmp_path / "base"
    torch.manual_seed(0)
    create_aligner("tiny").save_pretrained(base)
    config = job(
        small_phantoms,
        tmp_path / mode,
        mode,
        model=str(base),
        head={"findings": FINDINGS, "kind": kind},
    )
    result = finetune(config)
    loaded = load_classifier(tmp_path / mode)
    assert loaded.findings == tuple(FINDINGS) and loaded.kind == "linear"
    metrics = evaluate_classifier(loaded, load_split(config, "train", 64))
    assert metrics["macro"]["auroc"] == pytest.approx(result["macro_auroc"], abs=1e-6)

    study = read_manifest(small_phantoms, Study)[0]
    pipeline = InferencePipeline(InferConfig(finetuned=str(tmp_path / mode), device="cpu"))
    done = pipeline.run_study([Path(image.path) for image in study.images])
    doc = result_to_json(done)
    assert doc["model"]["head_sha256"] == sha256_tensors(tmp_path / mode / "head.safetensors")
    assert (doc["model"]["adapter_sha256"] is not None) == (mode == "lora")
    assert [f["finding"] for f in doc["study_findings"]] == FINDINGS


def test_finetuned_excludes_prompt_options():
    with pytest.raises(ValueError, match="finetuned"):
        InferConfig(finetuned="runs/lora", adapter="runs/lora/adapter")


def test_cli_rejects_unknown_keys_by_name(tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["finetune", "mode=lora", "train.learning_rate=1"])
    assert done.exit_code == 2
    assert "learning_rate" in done.output
    done = runner.invoke(app, ["finetune", "mode=adapter"])
    assert done.exit_code == 2 and "mode" in done.output


def test_the_engine_folder_is_the_jobs_not_the_users():
    with pytest.raises(ConfigError, match=r"train\.output_dir .*set output_dir instead"):
        from_dict(FinetuneConfig, {"train": {"output_dir": "runs/elsewhere"}})
    assert from_dict(FinetuneConfig, {"output_dir": "runs/x"}).train.output_dir is None


def test_lora_head_learns_at_head_lr_and_the_adapters_at_train_lr():
    from medvl.models import PromptBank
    from medvl.train.engine import EngineConfig
    from medvl.train.finetune.steps import build_classifier, lora_param_groups

    config = from_dict(FinetuneConfig, {"mode": "lora", "head_lr": 1e-2, "train": {"lr": 1e-3}})
    prompts = PromptBank.from_yaml().subset(["Cardiomegaly", "Edema"])
    model = build_classifier(create_aligner("tiny"), prompts, config)
    groups = lora_param_groups(model, EngineConfig(lr=1e-3), config.head_lr)
    head = {id(p) for p in model.head.parameters()}
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert {lrs[i] for i in head} == {1e-2}
    adapters = [id(p) for n, p in model.named_parameters() if "lora_" in n]
    assert adapters and {lrs[i] for i in adapters} == {1e-3}
    assert set(lrs) == {id(p) for p in model.parameters() if p.requires_grad}
    default = lora_param_groups(model, EngineConfig(lr=1e-3), 0.0)
    assert {g["lr"] for g in default} == {1e-3}
    with pytest.raises(ConfigError, match="head_lr must be >= 0"):
        from_dict(FinetuneConfig, {"head_lr": -1e-3})


def test_wise_alpha_scales_the_merged_lora_update_and_the_head_change_exactly():
    from medvl.models import PromptBank
    from medvl.train.finetune.steps import build_classifier, interpolate_to_start, trainable_start

    config = from_dict(FinetuneConfig, {"mode": "lora", "lora": {"r": 2, "alpha": 4}})
    prompts = PromptBank.from_yaml().subset(["Cardiomegaly", "Edema"])
    model = build_classifier(create_aligner("tiny"), prompts, config)
    start = trainable_start(model)
    assert any(".lora_B." in n for n in start) and "head.weight" in start
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in start:
                param.add_(torch.randn_like(param))
    layer = next(m for m in model.modules() if hasattr(m, "lora_B") and m.lora_B)

    def update() -> torch.Tensor:
        return layer.get_delta_weight("default").detach().clone()

    trained, head = update(), model.head.weight.detach().clone()
    interpolate_to_start(model, start, 0.25)
    assert torch.allclose(update(), 0.25 * trained, atol=1e-6)
    expected = start["head.weight"] + 0.25 * (head - start["head.weight"])
    assert torch.allclose(model.head.weight, expected)
    with pytest.raises(ConfigError, match=r"wise_alpha must be in \[0, 1\]"):
        from_dict(FinetuneConfig, {"wise_alpha": 1.5})
