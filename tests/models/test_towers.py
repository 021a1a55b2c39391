"""Towers: one-channel folding of RGB weights is exact, pretrained sources load, options work."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from medvl.models.towers import (
    ImageTowerConfig,
    TextTowerConfig,
    build_image_tower,
    build_text_tower,
    convert_to_grayscale,
    minilm_path,
)


def test_grayscale_conversion_equals_rgb_net_on_replicated_gray() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    gray = torch.rand(2, 1, 8, 8)
    expected = net(gray.expand(-1, 3, -1, -1))
    assert convert_to_grayscale(net)
    assert net[0].in_channels == 1
    torch.testing.assert_close(net(gray), expected)
    assert not convert_to_grayscale(net)  # nothing left to convert


@pytest.mark.slow
def test_densenet_checkpoint_loads_with_folded_stem(tmp_path) -> None:
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = torchvision.models.densenet121(weights=None).eval()
    path = tmp_path / "densenet121.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    # explicit scalar statistics: the RGB kernel is summed (per-channel default: see
    # tests/models/test_towers_torchvision.py)
    config = ImageTowerConfig(
        arch="densenet121", pretrained=str(path), image_size=64, mean=0.449, std=0.226
    )
    tower = build_image_tower(config).eval()
    assert config.channel_mean is None
    assert tower.state_dict()["blocks.0.0.conv0.weight"].shape[1] == 1
    assert len(tower.source_sha256) == 64
    gray = torch.rand(2, 1, 64, 64)
    normalised = ((gray - config.mean) / config.std).expand(-1, 3, -1, -1)
    with torch.no_grad():
        expected = torch.relu(reference.features(normalised)).mean(dim=(2, 3))
        torch.testing.assert_close(tower.encode(gray), expected, rtol=1e-4, atol=1e-5)


def test_torchvision_checkpoint_of_wrong_arch_is_refused(tmp_path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a resnet50 checkpoint"):
        build_image_tower(ImageTowerConfig(arch="resnet50", pretrained=str(path)))


CHANNEL_MEAN, CHANNEL_STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)


def _tiny_vit_dir(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=16,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = ViTModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(tmp_path)
    preprocessor = {"image_mean": list(CHANNEL_MEAN), "image_std": list(CHANNEL_STD)}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return model


def test_hf_vision_directory_gets_its_own_per_channel_statistics(tmp_path) -> None:
    reference = _tiny_vit_dir(tmp_path)
    config = ImageTowerConfig(arch="hf", pretrained=str(tmp_path), image_size=32)
    tower = build_image_tower(config).eval()
    assert (config.channel_mean, config.channel_std) == (CHANNEL_MEAN, CHANNEL_STD)
    assert (config.mean, config.std) == (0.0, 1.0)  # folded into the patch embedding
    gray = torch.rand(3, 1, 32, 32)
    mean = torch.tensor(CHANNEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CHANNEL_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = reference(pixel_values=(gray.expand(-1, 3, -1, -1) - mean) / std)
        pooled, local = tower.forward_both(gray)
    torch.testing.assert_close(pooled, hidden.last_hidden_state[:, 0], rtol=0, atol=1e-5)
    assert local.shape == (3, 4, 32)


def test_gray_input_conv_equals_rgb_normalise_then_conv_with_padding() -> None:
    from medvl.models.towers.grayscale import GrayInputConv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 7, stride=2, padding=3)
    gray_conv = GrayInputConv(conv, CHANNEL_MEAN, CHANNEL_STD)
    gray = torch.rand(2, 1, 20, 20)
    mean = torch.tensor(CHANNEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CHANNEL_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = conv((gray.expand(-1, 3, -1, -1) - mean) / std)
        torch.testing.assert_close(gray_conv(gray), expected, rtol=0, atol=1e-5)
    assert gray_conv.weight is conv.weight and "channel_mean" not in gray_conv.state_dict()


def test_vit_b16_uses_sdpa_and_single_channel_patches() -> None:
    tower = build_image_tower(ImageTowerConfig(arch="vit_b16", image_size=32))
    assert tower.model.config._attn_implementation == "sdpa"
    assert tower.model.config.num_channels == 1
    assert tower.out_dim == 768


@pytest.mark.parametrize("policy", ["full", "selective"])
def test_tiny_tower_gradient_checkpointing_gives_same_gradients(policy: str) -> None:
    torch.manual_seed(0)
    plain = build_image_tower(ImageTowerConfig(arch="tiny", image_size=32))
    checkpointed = build_image_tower(
        ImageTowerConfig(
            arch="tiny", image_size=32, gradient_checkpointing=True, checkpoint_policy=policy
        )
    )
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 32, 32)
    plain.encode(x).square().sum().backward()
    checkpointed.encode(x).square().sum().backward()
    for (name, a), (_, b) in zip(
        plain.named_parameters(), checkpointed.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


@pytest.mark.parametrize("policy", ["full", "selective"])
def test_text_tower_checkpointing_gives_same_gradients(policy: str) -> None:
    torch.manual_seed(0)
    plain = build_text_tower(TextTowerConfig(name_or_path="tiny-bert"))
    config = TextTowerConfig(
        name_or_path="tiny-bert", gradient_checkpointing=True, checkpoint_policy=policy
    )
    checkpointed = build_text_tower(config)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.model.is_activation_checkpointing
    for tower in (plain, checkpointed):  # train mode without dropout: identical recomputation
        tower.train()
        for module in tower.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    tokens = plain.tokenize(["Small left effusion.", "No acute process."])
    plain.encode(**tokens).square().sum().backward()
    checkpointed.encode(**tokens).square().sum().backward()
    for (name, a), (_, b) in zip(
        plain.named_parameters(), checkpointed.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_image_tower_resizes_other_sizes_with_one_warning(caplog) -> None:
    tower = build_image_tower(ImageTowerConfig(arch="tiny", image_size=32))
    with caplog.at_level(logging.WARNING):
        assert tower.encode(torch.rand(1, 1, 48, 48)).shape == (1, 128)
        tower.encode(torch.rand(1, 1, 48, 48))
    assert sum("resizes" in r.message for r in caplog.records) == 1


def test_text_tower_pooling_and_truncation() -> None:
    mean_tower = build_text_tower(TextTowerConfig(name_or_path="tiny-bert", max_length=8)).eval()
    tokens = mean_tower.tokenize(["a b c d e f g h i j k l", "short"])
    assert tokens["input_ids"].shape == (2, 8)
    token_features = mean_tower.features(**tokens)
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    expected = (token_features * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(mean_tower.encode(**tokens), expected)
    cls_tower = build_text_tower(TextTowerConfig(name_or_path="tiny-bert", pooling="cls")).eval()
    cls_tower.load_state_dict(mean_tower.state_dict())
    torch.testing.assert_close(cls_tower.encode(**tokens), cls_tower.features(**tokens)[:, 0])
    with pytest.raises(TypeError, match="list of strings"):
        mean_tower.tokenize("one string")


def test_text_tower_reads_local_directory_and_rejects_unknown_names(tmp_path) -> None:
    tower = build_text_tower(TextTowerConfig(name_or_path=str(minilm_path())))
    assert tower.out_dim == 384
    assert tower.model.pooler is None
    with pytest.raises(ValueError, match="no tokenizer"):
        build_text_tower(TextTowerConfig(name_or_path=str(tmp_path / "missing")))
