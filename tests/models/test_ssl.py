"""Self-supervised objectives of image towers: MAE on the timm ViT, SimCLR on any tower."""

from __future__ import annotations

import pytest
import torch

from medvl.models.ssl import MaskedAutoencoder, SimCLR, ssl_objective
from medvl.models.ssl.objective import method_problem
from medvl.models.towers import ImageTowerConfig, build_image_tower


@pytest.fixture
def vit():
    torch.manual_seed(0)
    config = ImageTowerConfig(
        arch="vit_tiny", image_size=32, patch_size=8, vit_depth=2, vit_width=64, vit_heads=2
    )
    return build_image_tower(config)


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return build_image_tower(ImageTowerConfig(arch="tiny", image_size=32, tiny_widths=(8, 16)))


def test_patchify_follows_the_patch_embedding_order(vit):
    mae = MaskedAutoencoder(vit)
    image = torch.zeros(1, 1, 32, 32)
    image[..., 8:16, 16:24] = 1.0  # grid row 1, column 2 of a 4 x 4 grid
    patches = mae.patchify(image)
    assert patches.shape == (1, 16, 64)
    assert patches[0].sum(-1).nonzero().flatten().tolist() == [1 * 4 + 2]
    assert torch.equal(patches[0, 6], torch.ones(64))


def test_mae_encodes_only_the_visible_quarter_and_trains_the_tower(vit):
    mae = MaskedAutoencoder(vit, mask_ratio=0.75)
    tokens, keep = mae.encode_visible(vit.prepare(torch.rand(3, 1, 32, 32)))
    assert keep.shape == (3, 4) and tokens.shape == (3, 1 + 4, 64)  # CLS + 4 of 16 patches
    loss = mae(torch.rand(3, 1, 32, 32))
    loss.backward()
    assert loss.item() > 0.5  # normalised pixels from a random decoder: about unit error
    assert vit.model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert vit.model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_mae_loss_counts_masked_patches_only(vit):
    """Flattening the visible patches of an image leaves the loss as it was."""
    mae = MaskedAutoencoder(vit)
    with torch.no_grad():  # predict 0 everywhere: the loss is the masked targets' energy
        mae.decoder_pred.weight.zero_()
        mae.decoder_pred.bias.zero_()
    pixels = torch.rand(2, 1, 32, 32)
    torch.manual_seed(5)
    _, keep = mae.encode_visible(vit.prepare(pixels))
    flattened = pixels.clone()
    for index in keep[0].tolist():
        r, c = divmod(index, 4)
        flattened[0, 0, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = 0.5
    with torch.no_grad():
        torch.manual_seed(5)  # the same masks
        loss = mae(pixels)
        torch.manual_seed(5)
        loss_flattened = mae(flattened)
        torch.manual_seed(6)  # other masks: flattened patches now count, and lower the loss
        other = mae(flattened)
    assert loss.item() == pytest.approx(63 / 64, abs=0.01)  # unbiased variance, normalised
    assert loss_flattened.item() == pytest.approx(loss.item(), abs=1e-6)
    assert other.item() < loss.item() - 0.02


def test_simclr_prefers_matching_views(cnn):
    simclr = SimCLR(cnn, temperature=0.2)
    images = torch.rand(8, 1, 32, 32)
    with torch.no_grad():
        same = simclr(images, images)
        shuffled = simclr(images, images[torch.randperm(8)])
    assert same < shuffled
    assert same.item() < torch.log(torch.tensor(15.0)).item()  # below chance over 2B - 1 views


def test_mae_needs_the_vit_tower_simclr_takes_any(vit, cnn):
    problem = method_problem("mae", cnn)
    assert "mae needs the ViT image tower" in problem and "'tiny'" in problem
    assert "simclr" in problem and "\n" not in problem
    assert method_problem("simclr", cnn) is None and method_problem("simclr", vit) is None
    with pytest.raises(ValueError, match="mae needs the ViT"):
        ssl_objective("mae", cnn)
    assert isinstance(ssl_objective("mae", vit), MaskedAutoencoder)
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedAutoencoder(vit, mask_ratio=1.0)
