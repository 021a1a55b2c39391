"""torchxrayvision towers: its own normalisation, op_threshs, and both of its weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvl.models import MedVLAligner, create_aligner
from medvl.models.towers import ImageTowerConfig, build_image_tower


@pytest.fixture(scope="module")
def xrv_model() -> torch.nn.Module:
    import torchxrayvision as xrv

    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None, op_threshs=torch.rand(18) * 0.5 + 0.25)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial running statistics
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["state_dict", "pickled_model"])
def test_xrv_weights_give_xrv_features_and_outputs(xrv_model, shape: str, tmp_path: Path) -> None:
    path = tmp_path / "xrv.pt"
    torch.save(xrv_model.state_dict() if shape == "state_dict" else xrv_model, path)
    config = ImageTowerConfig(arch="xrv_densenet", pretrained=str(path), image_size=64)
    tower = build_image_tower(config).eval()
    assert (config.mean, config.std) == (0.5, 1 / 2048) and config.xrv_op_threshs
    gray = torch.rand(2, 1, 64, 64)
    xrv_input = gray * 2048 - 1024  # xrv.datasets.normalize(img * 255, 255)
    with torch.no_grad():
        torch.testing.assert_close(
            tower.encode(gray), xrv_model.features2(xrv_input), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            tower.pathology_probs(gray), xrv_model(xrv_input), atol=1e-5, rtol=0
        )
    assert torch.equal(tower.model.op_threshs, xrv_model.op_threshs)


@pytest.mark.slow
def test_xrv_tower_saves_and_loads_and_refuses_other_statistics(xrv_model, tmp_path: Path) -> None:
    path = tmp_path / "xrv.pt"
    torch.save(xrv_model.state_dict(), path)
    settings = {"image.arch": "xrv_densenet", "image.pretrained": str(path), "image.image_size": 64}
    aligner = create_aligner("tiny", **settings)
    aligner.save_pretrained(tmp_path / "m")
    loaded = MedVLAligner.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.image_tower.model.op_threshs, xrv_model.op_threshs)
    with pytest.raises(ValueError, match="torchxrayvision models expect mean 0.5, std 1/2048"):
        create_aligner("tiny", **settings, **{"image.mean": 0.449, "image.std": 0.226})


def test_a_pickle_with_other_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten()), path)  # Flatten is not allowed
    config = ImageTowerConfig(arch="xrv_densenet", pretrained=str(path), image_size=64)
    with pytest.raises(
        ValueError, match="evil.pt: neither a state dict nor a pickled torchxrayvision"
    ):
        build_image_tower(config)
