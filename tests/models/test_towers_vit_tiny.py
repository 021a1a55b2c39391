"""The small timm ViT tower: shapes, save/load, and LoRA on its attention only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvl.models import MedVLAligner, create_aligner
from medvl.models.aligner import PRESETS
from medvl.models.classifier import image_tower_blocks
from medvl.models.lora import LoraConfig, apply_lora, lora_target_names

VIT = {"image.arch": "vit_tiny", "image.image_size": 64, "image.vit_depth": 2}


def test_preset_is_a_small_vit_on_attention() -> None:
    image = PRESETS["vit_tiny-minilm"]["image"]
    assert image == {"arch": "vit_tiny", "image_size": 128}
    torch.manual_seed(0)
    aligner = create_aligner("tiny", **{"image.arch": "vit_tiny", "image.image_size": 128})
    tower = aligner.image_tower
    n = sum(p.numel() for p in tower.parameters())
    assert 1.0e6 < n < 2.5e6  # 4 x 192 at patch 16
    pooled, local = tower.forward_both(torch.rand(3, 1, 128, 128))
    assert pooled.shape == (3, 192) and local.shape == (3, 64, 192)
    assert aligner.encode_image(torch.rand(2, 1, 128, 128)).shape == (2, 64)
    assert len(image_tower_blocks(tower)) == 4  # what partial fine-tuning unfreezes from the top


def test_vit_tiny_saves_and_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    aligner = create_aligner("tiny", **VIT).eval()
    aligner.save_pretrained(tmp_path / "m")
    loaded = MedVLAligner.from_pretrained(tmp_path / "m")
    pixels = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(pixels), aligner.encode_image(pixels))
    assert (loaded.config.image.mean, loaded.config.image.std) == (0.5, 0.25)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        create_aligner("tiny", **{**VIT, "image.image_size": 72})


def test_lora_sits_on_qkv_and_out_only_and_only_it_trains() -> None:
    torch.manual_seed(0)
    aligner = create_aligner("tiny", **VIT)
    names = lora_target_names(aligner, LoraConfig(towers=("image",)))
    assert names == [
        f"image_tower.model.blocks.{i}.attn.{leaf}" for i in range(2) for leaf in ("qkv", "proj")
    ]  # not patch_embed.proj (a convolution) nor the MLPs
    model = apply_lora(aligner, LoraConfig(r=4, towers=("image",), dropout=0.0))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".attn." in n and "lora_" in n for n in trainable)
    assert len(trainable) == 2 * 2 * 2  # blocks x (qkv, proj) x (A, B)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        optimiser.zero_grad()
        model.encode_image(torch.rand(4, 1, 64, 64)).sum().backward()
        optimiser.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
