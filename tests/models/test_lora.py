"""LoRA on the aligner: only adapters train, adapters save/load alone, merging is exact."""

from __future__ import annotations

import hashlib

import pytest
import torch

from medvl.models import MedVLAligner
from medvl.models.lora import (
    LoraConfig,
    apply_lora,
    count_parameters,
    load_adapter,
    lora_target_names,
    merge_lora,
    save_adapter,
)


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.state_dict().items() if "lora_" not in n}


def embed(model, pixels, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        out = model(pixels, tokens["input_ids"], tokens["attention_mask"])
    return out["image_embeds"], out["text_embeds"]


def train_a_few_steps(model, pixels, tokens, steps: int = 3) -> None:
    from medvl.models import ContrastiveLoss

    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    loss_fn = ContrastiveLoss()
    for _ in range(steps):
        out = model(pixels, tokens["input_ids"], tokens["attention_mask"])
        loss = loss_fn(out["image_embeds"], out["text_embeds"], out["logit_scale"])
        optim.zero_grad()
        loss.backward()
        optim.step()


def test_targets_resolve_per_tower_family(tiny_aligner):
    names = lora_target_names(tiny_aligner, LoraConfig(towers=("image", "text")))
    image = [n for n in names if n.startswith("image_tower.")]
    text = [n for n in names if n.startswith("text_tower.")]
    assert len(image) == 8  # every conv of the tiny CNN (4 stages x 2)
    assert sorted({n.rsplit(".", 1)[-1] for n in text}) == ["query", "value"]
    assert len(text) == 4  # 2 layers x (query, value)
    with pytest.raises(ValueError, match="lora.text_targets"):
        lora_target_names(tiny_aligner, LoraConfig(towers=("text",), text_targets=("nope",)))


def test_only_adapter_weights_change(tiny_aligner, pixels, reports):
    tokens = tiny_aligner.tokenize(reports)
    model = apply_lora(tiny_aligner, LoraConfig(r=4, alpha=8, towers=("image", "text")))
    trainable, total = count_parameters(model)
    assert 0 < trainable < total / 5
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    frozen_before = checksum(base_weights(model))
    lora_before = checksum({n: p for n, p in model.state_dict().items() if "lora_" in n})
    train_a_few_steps(model, pixels, tokens)
    assert checksum(base_weights(model)) == frozen_before
    assert checksum({n: p for n, p in model.state_dict().items() if "lora_" in n}) != lora_before


def test_adapter_round_trip_and_merge_is_exact(tiny_aligner, pixels, reports, tmp_path):
    tiny_aligner.save_pretrained(tmp_path / "base")
    tokens = tiny_aligner.tokenize(reports)
    base_out = embed(tiny_aligner, pixels, tokens)
    model = apply_lora(
        tiny_aligner, LoraConfig(r=4, alpha=8, dropout=0.0, towers=("image", "text"))
    )
    train_a_few_steps(model, pixels, tokens)
    adapted = embed(model, pixels, tokens)
    assert not torch.allclose(adapted[0], base_out[0], atol=1e-4)

    save_adapter(model, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "medvl_adapter.json"} <= files
    assert "model.safetensors" not in files
    adapter_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (tmp_path / "base" / "model.safetensors").stat().st_size / 5

    reloaded = load_adapter(MedVLAligner.from_pretrained(tmp_path / "base"), tmp_path / "adapter")
    for a, b in zip(embed(reloaded, pixels, tokens), adapted, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)

    merge_lora(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged")
    merged = MedVLAligner.from_pretrained(tmp_path / "merged")
    assert not any("lora_" in n for n in merged.state_dict())
    for a, b in zip(embed(merged, pixels, tokens), adapted, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_config_is_validated():
    with pytest.raises(ValueError, match="towers"):
        LoraConfig(towers=("audio",))
    with pytest.raises(ValueError, match="r >= 1"):
        LoraConfig(r=0)
