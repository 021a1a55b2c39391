"""torchvision towers: ImageNet's per-channel statistics exactly, recorded and checked on load."""

from __future__ import annotations

import json

import pytest
import torch

from medvl.models import create_aligner
from medvl.models.towers import ImageTowerConfig, build_image_tower
from medvl.models.towers.image import IMAGENET_MEAN, IMAGENET_STD

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _checkpoint(arch: str, tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = getattr(torchvision.models, arch)(weights=None).eval()
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    return reference, path


def _reference_pooled(arch: str, reference, rgb):
    if arch == "densenet121":
        return torch.relu(reference.features(rgb)).mean(dim=(2, 3))
    reference.fc = torch.nn.Identity()
    return reference(rgb)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet50", "densenet121"])
def test_tower_equals_torchvision_on_rgb_with_per_channel_imagenet_stats(arch, tmp_path) -> None:
    reference, path = _checkpoint(arch, tmp_path)
    config = ImageTowerConfig(arch=arch, pretrained=str(path), image_size=64)
    tower = build_image_tower(config).eval().double()  # float64: the folding, not rounding
    reference.double()
    assert (config.channel_mean, config.channel_std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert (config.mean, config.std) == (0.0, 1.0)
    gray = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        expected = _reference_pooled(arch, reference, (gray.expand(-1, 3, -1, -1) - MEAN) / STD)
        averaged = _reference_pooled(
            arch, reference, ((gray - MEAN.mean()) / STD.mean()).expand(-1, 3, -1, -1)
        )
        got = tower.encode(gray)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert (got - averaged).abs().max() > 1e-2  # the averaged statistics would be visibly off


@pytest.mark.slow
def test_saved_model_records_stats_old_scalar_models_load_mismatch_names_file(tmp_path) -> None:
    _, path = _checkpoint("densenet121", tmp_path)
    image = {"arch": "densenet121", "pretrained": str(path), "image_size": 64}
    model = create_aligner("tiny", image=image, embed_dim=8).eval()
    model.save_pretrained(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())["aligner"]["image"]
    assert saved["channel_mean"] == list(IMAGENET_MEAN)
    assert saved["channel_std"] == list(IMAGENET_STD)
    gray = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            create_aligner(tmp_path / "new").encode_image(gray), model.encode_image(gray)
        )

    # a model saved before per-channel folding: one scalar mean/std, a one-channel first kernel
    old_image = {**image, "mean": 0.449, "std": 0.226}
    old = create_aligner("tiny", image=old_image, embed_dim=8).eval()
    assert old.config.image.channel_mean is None
    assert old.image_tower.state_dict()["blocks.0.0.conv0.weight"].shape[1] == 1
    old.save_pretrained(tmp_path / "old")
    with torch.no_grad():
        torch.testing.assert_close(
            create_aligner(tmp_path / "old").encode_image(gray), old.encode_image(gray)
        )

    # config.json says per-channel, the weights hold a summed kernel: one line naming the file
    config_file = tmp_path / "old" / "config.json"
    payload = json.loads(config_file.read_text())
    payload["aligner"]["image"].update(
        channel_mean=list(IMAGENET_MEAN), channel_std=list(IMAGENET_STD), mean=None, std=None
    )
    config_file.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"model\.safetensors: the first densenet121 conv") as err:
        create_aligner(tmp_path / "old")
    assert "\n" not in str(err.value)
