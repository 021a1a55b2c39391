"""timm image towers: a timm checkpoint gives the same features as timm on the RGB image."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvl.models import MedVLAligner, create_aligner
from medvl.models.towers import ImageTowerConfig, build_image_tower


@pytest.mark.parametrize(("name", "side"), [("test_resnet", 160), ("test_vit", 160)])
def test_timm_checkpoint_equals_timm(name: str, side: int, tmp_path: Path) -> None:
    import timm
    from timm.data import resolve_data_config

    torch.manual_seed(0)
    source = timm.create_model(name, pretrained=False).eval()  # with its classifier
    checkpoint = tmp_path / f"{name}.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, checkpoint
    )
    config = ImageTowerConfig(
        arch="timm", timm_model=name, pretrained=str(checkpoint), image_size=side
    )
    tower = build_image_tower(config).eval()
    data = resolve_data_config({}, model=source)
    assert config.channel_mean == tuple(data["mean"]) and config.channel_std == tuple(data["std"])
    gray = torch.rand(2, 1, side, side)
    mean = torch.tensor(data["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(data["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = source.forward_head(
            source.forward_features((gray.expand(-1, 3, -1, -1) - mean) / std), pre_logits=True
        )
        torch.testing.assert_close(tower.encode(gray), expected, rtol=0, atol=1e-5)


def test_timm_tower_in_an_aligner_saves_and_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    aligner = create_aligner(
        "tiny", **{"image.arch": "timm", "image.timm_model": "test_resnet", "image.image_size": 64}
    )
    aligner.save_pretrained(tmp_path / "m")
    loaded = MedVLAligner.from_pretrained(tmp_path / "m")
    pixels = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(pixels), aligner.eval().encode_image(pixels))
    assert loaded.config.image.channel_mean == (0.5, 0.5, 0.5)


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    config = ImageTowerConfig(arch="timm", timm_model="test_resnet", pretrained=str(path))
    with pytest.raises(ValueError, match="other.pth: not a test_resnet checkpoint"):
        build_image_tower(config)
