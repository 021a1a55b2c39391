"""Batched augmentation: seeded by the batch, identity when off, geometry within its bounds."""

from __future__ import annotations

import torch

from medvl.data.batch_augment import BatchAugment

IDS = [f"img{i}" for i in range(8)]


def blobs(n: int = 8, size: int = 64) -> torch.Tensor:
    """One smooth bright blob per image, centred."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = torch.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / 40.0)
    return blob.expand(n, 1, size, size).clone()


def centroid(images: torch.Tensor) -> torch.Tensor:
    size = images.shape[-1]
    grid = torch.arange(size, dtype=torch.float32)
    mass = images.sum(dim=(1, 2, 3))
    rows = (images.sum(dim=(1, 3)) * grid).sum(dim=1) / mass
    cols = (images.sum(dim=(1, 2)) * grid).sum(dim=1) / mass
    return torch.stack([rows, cols], dim=1)


def test_same_batch_same_draws_other_batch_other_draws():
    images, aug = blobs(), BatchAugment(prob=1.0)
    assert torch.equal(aug(images, IDS), aug(images, IDS))
    assert not torch.equal(aug(images, IDS), aug(images, IDS[::-1]))
    assert not torch.equal(aug(images, IDS), BatchAugment(prob=1.0, seed=1)(images, IDS))


def test_probability_zero_is_the_identity():
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(BatchAugment(prob=0.0)(images, IDS), images, atol=1e-6, rtol=0)


def test_shift_stays_within_its_bound_and_values_stay_in_range():
    images = blobs()
    shift_only = BatchAugment(
        prob=1.0, rotate_deg=0.0, scale=0.0, translate=0.1, brightness=0.0, contrast=(1.0, 1.0)
    )
    out = shift_only(images, IDS)
    moved = (centroid(out) - centroid(images)).abs()
    assert out.shape == images.shape
    assert float(moved.max()) <= 0.1 * 64 + 0.5  # at most 10% of the side
    assert float(moved.max()) > 1.0  # and something did move
    strong = BatchAugment(prob=1.0, brightness=0.9)(images, IDS)
    assert float(strong.min()) >= 0.0 and float(strong.max()) <= 1.0


def test_rotation_and_zoom_keep_a_centred_blob_centred():
    images = blobs()
    spin = BatchAugment(
        prob=1.0, rotate_deg=30.0, scale=0.2, translate=0.0, brightness=0.0, contrast=(1.0, 1.0)
    )
    out = spin(images, IDS)
    assert float((centroid(out) - centroid(images)).abs().max()) < 0.6
    spread = out.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))  # zoom changes the blob's area
    assert float(spread.min()) < 0.97 or float(spread.max()) > 1.03
