"""Findings classifier: zero-shot-initialised heads, masked BCE, few-shot sampling, saving."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from medvl.models import PromptBank, ZeroShotClassifier
from medvl.models.classifier import (
    FindingsClassifier,
    few_shot_indices,
    image_tower_blocks,
    load_classifier,
    masked_bce,
)
from medvl.models.hub import ChecksumError, sha256_file, sha256_tensors
from medvl.models.lora import LoraConfig, apply_lora

FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax")
NAN = math.nan


@pytest.mark.parametrize("kind", ["linear", "prompt"])
def test_head_starts_as_the_zero_shot_classifier(tiny_aligner, kind):
    prompts = PromptBank.from_yaml().subset(FINDINGS)
    pixels = torch.rand(5, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = ZeroShotClassifier(tiny_aligner, prompts).predict_proba(pixels)
    model = FindingsClassifier(tiny_aligner, prompts, kind).eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(pixels))
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    assert model.findings == FINDINGS


def test_prompt_head_sends_gradient_into_the_text_tower(tiny_aligner):
    prompts = PromptBank.from_yaml().subset(FINDINGS)
    model = FindingsClassifier(tiny_aligner, prompts, "prompt")
    loss = masked_bce(model(torch.rand(2, 1, 64, 64)), torch.tensor([[1.0, 0.0, NAN]] * 2))
    loss.backward()
    grads = [p.grad for p in tiny_aligner.text_tower.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_prompt_head_folds_into_an_equal_linear_head(tiny_aligner):
    prompts = PromptBank.from_yaml().subset(FINDINGS)
    model = FindingsClassifier(tiny_aligner, prompts, "prompt").eval()
    with torch.no_grad():
        model.head.log_scale.add_(torch.tensor([0.3, -0.2, 0.1]))  # as if trained
        model.head.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    embeds = torch.nn.functional.normalize(torch.randn(6, tiny_aligner.config.embed_dim), dim=-1)
    with torch.no_grad():
        expected = model.classify(embeds)
        folded = model.head.to_linear(tiny_aligner)(embeds)
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-5)


def test_masked_bce_ignores_unknown_and_follows_the_uncertain_policy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[1.0, NAN, -1.0], [0.0, 1.0, NAN]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    known = bce(torch.tensor([2.0, 0.0, 3.0]), torch.tensor([1.0, 0.0, 1.0]))
    assert masked_bce(logits, labels, "ignore") == pytest.approx(float(known))
    ones = bce(torch.tensor([2.0, 0.5, 0.0, 3.0]), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert masked_bce(logits, labels, "positive") == pytest.approx(float(ones))
    zeros = bce(torch.tensor([2.0, 0.5, 0.0, 3.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert masked_bce(logits, labels, "negative") == pytest.approx(float(zeros))
    empty = masked_bce(logits.requires_grad_(), torch.full((2, 3), NAN))
    assert empty.item() == 0.0 and empty.requires_grad


def test_few_shot_sampling_is_deterministic_and_order_free():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (40, 3), generator=g).float()
    labels[::7, 1] = NAN
    ids = [f"study-{i:03d}" for i in range(40)]
    picked = few_shot_indices(labels, ids, k=2, seed=3)
    assert picked == few_shot_indices(labels, ids, k=2, seed=3)
    for column in range(3):
        chosen = labels[picked, column]
        assert (chosen == 1).sum() >= 2 and (chosen == 0).sum() >= 2
    assert len(picked) <= 12
    order = list(reversed(range(40)))  # same studies in another manifest order
    again = few_shot_indices(labels[order], [ids[i] for i in order], k=2, seed=3)
    assert sorted(ids[order[i]] for i in again) == sorted(ids[i] for i in picked)
    assert few_shot_indices(labels, ids, k=2, seed=4) != picked


def test_image_tower_blocks_of_the_tiny_cnn(tiny_aligner):
    blocks = image_tower_blocks(tiny_aligner.image_tower)
    assert len(blocks) == 4
    with pytest.raises(ValueError, match="block list"):
        image_tower_blocks(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------ save / load

SAVED = ("Pneumothorax", "Cardiomegaly", "Pleural Effusion")  # not sorted: order must survive


def _trained(aligner, base: Path, kind: str, mode: str) -> FindingsClassifier:
    """A classifier on ``aligner`` (saved first as ``base``) whose weights moved off zero-shot."""
    aligner.save_pretrained(base)
    prompts = PromptBank.from_yaml().subset(SAVED)
    model = FindingsClassifier(aligner, prompts, kind)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
        if mode == "lora":
            config = LoraConfig(r=2, alpha=4, dropout=0.0, towers=("image", "text"))
            model.aligner = apply_lora(aligner, config)
            for name, p in model.aligner.named_parameters():
                if "lora_B" in name:  # peft starts B at zero: make the adapter matter
                    p.add_(0.2 * torch.randn(p.shape, generator=generator))
        elif mode == "full":
            aligner.image_projection.weight.mul_(1.5)
    return model.eval()


@pytest.mark.parametrize(
    ("kind", "mode"), [("linear", "linear_probe"), ("prompt", "full"), ("prompt", "lora")]
)
def test_saved_classifier_gives_the_same_probabilities(tiny_aligner, pixels, tmp_path, kind, mode):
    model = _trained(tiny_aligner, tmp_path / "base", kind, mode)
    expected = model.predict_proba(pixels)
    model.save_pretrained(tmp_path / "clf", base=tmp_path / "base", mode=mode)

    loaded = load_classifier(tmp_path / "clf")
    torch.testing.assert_close(loaded.predict_proba(pixels), expected, atol=1e-6, rtol=0)
    assert loaded.findings == SAVED and loaded.kind == "linear"  # prompt head folded
    assert not loaded.training
    payload = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert payload["format"] == "medvl-findings-classifier" and payload["head"] == kind
    assert payload["mode"] == mode and payload["base"] == str((tmp_path / "base").resolve())
    assert loaded.weights_sha256 == sha256_tensors(tmp_path / "clf" / "head.safetensors")
    adapter = tmp_path / "clf" / "adapter" / "adapter_model.safetensors"
    assert (
        (loaded.adapter_sha256 == sha256_file(adapter)) if mode == "lora" else not adapter.exists()
    )
    assert (tmp_path / "clf" / "model" / "model.safetensors").is_file() == (mode == "full")


def test_older_finetune_folder_still_loads(tiny_aligner, pixels, tmp_path):
    from safetensors.torch import save_model

    model = _trained(tiny_aligner, tmp_path / "base", "prompt", "linear_probe")
    expected = model.predict_proba(pixels)
    run = tmp_path / "run"  # as `medvl finetune` wrote it before config.json existed
    run.mkdir()
    save_model(model.head, str(run / "head.safetensors"))
    info = {
        "findings": list(SAVED),
        "kind": "prompt",
        "mode": "linear_probe",
        "base": str((tmp_path / "base").resolve()),
        "prompts": model.prompts.to_dict(),
    }
    (run / "head.json").write_text(json.dumps(info, indent=2))

    loaded = load_classifier(run)
    torch.testing.assert_close(loaded.predict_proba(pixels), expected, atol=1e-6, rtol=0)
    assert loaded.weights_sha256 == sha256_file(run / "head.safetensors")
    del info["prompts"]
    (run / "head.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="without prompts"):
        load_classifier(run)


@pytest.mark.parametrize("part", ["head.safetensors", "adapter/adapter_model.safetensors"])
def test_tampered_classifier_is_refused(tiny_aligner, tmp_path, part):
    model = _trained(tiny_aligner, tmp_path / "base", "linear", "lora")
    model.save_pretrained(tmp_path / "clf", base=tmp_path / "base", mode="lora")
    weights = tmp_path / "clf" / part
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"{Path(part).name}: SHA-256 is .* records"):
        load_classifier(tmp_path / "clf")


def test_folder_without_a_classifier_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: not a saved findings classifier"):
        load_classifier(tmp_path)


def test_lora_mode_needs_an_adapter(tiny_aligner, tmp_path):
    model = FindingsClassifier(tiny_aligner, PromptBank.from_yaml().subset(SAVED))
    with pytest.raises(ValueError, match="no peft LoRA adapter"):
        model.save_pretrained(tmp_path, base="tiny", mode="lora")
