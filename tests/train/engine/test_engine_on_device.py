"""The engine's ``on_device`` hook: batched augmentation after the batch reached the device."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from medvl.data.batch_augment import BatchAugment
from medvl.train.engine import Engine, EngineConfig


class ToyImages(Dataset):
    """``n`` random 8x8 images with ids; the target is the mean brightness of the centre."""

    def __init__(self, n: int = 40) -> None:
        self.x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        self.ids = [f"img-{i:03d}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "image_id": self.ids[i]}


def image_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    target = batch["image"][:, :, 2:6, 2:6].mean(dim=(1, 2, 3))
    pred = model(batch["image"]).squeeze(1)
    return nn.functional.mse_loss(pred, target), {}


def crashing_after(loss_fn, calls: int):
    """``loss_fn`` that raises on call ``calls + 1`` (stands in for a killed process)."""
    count = {"n": 0}

    def crashing(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        count["n"] += 1
        if count["n"] > calls:
            raise RuntimeError("simulated crash")
        return loss_fn(model, batch)

    return crashing


def toy_model() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 1)
    )


def augmenter(seen: list | None = None):
    augment = BatchAugment(prob=1.0, brightness=0.5)

    def on_device(batch: dict) -> dict:
        if seen is not None:
            seen.append(batch["image"].device)
        return {**batch, "image": augment(batch["image"], batch["image_id"])}

    return on_device


def make_engine(out, **overrides) -> Engine:
    settings = dict(
        output_dir=out, max_steps=10, batch_size=8, lr=5e-3, warmup_steps=2, log_every=1,
        progress=False, tensorboard=False,
    )  # fmt: skip
    settings.update(overrides)
    return Engine(EngineConfig(**settings))


def test_on_device_sees_device_batches_and_changes_training(tmp_path):
    data, seen = ToyImages(), []
    torch.manual_seed(0)
    engine = make_engine(tmp_path / "aug", max_steps=4)
    augmented = engine.fit(
        toy_model(), engine.make_loader(data), image_loss, on_device=augmenter(seen)
    )
    assert len(seen) == 4 and all(d == engine.device for d in seen)
    torch.manual_seed(0)
    engine = make_engine(tmp_path / "plain", max_steps=4)
    plain = engine.fit(toy_model(), engine.make_loader(data), image_loss)
    assert plain.losses[0][1] != pytest.approx(augmented.losses[0][1], abs=1e-4)


def test_augmented_run_resumes_on_the_same_trajectory(tmp_path):
    data = ToyImages()
    common = dict(max_steps=12, checkpoint_every=7, keep_last=2)
    torch.manual_seed(0)
    full_engine = make_engine(tmp_path / "full", **common)
    full = full_engine.fit(
        toy_model(), full_engine.make_loader(data), image_loss, on_device=augmenter()
    )
    torch.manual_seed(0)
    first = make_engine(tmp_path / "split", **common)
    with pytest.raises(RuntimeError, match="simulated crash"):
        first.fit(
            toy_model(),
            first.make_loader(data),
            crashing_after(image_loss, 8),
            on_device=augmenter(),
        )
    torch.manual_seed(123)
    second = make_engine(tmp_path / "split", **common)
    resumed = second.fit(toy_model(), second.make_loader(data), image_loss, on_device=augmenter())
    assert resumed.resumed_from == 7
    tail = dict(full.losses[7:])
    assert len(resumed.losses) == 5
    for step, loss in resumed.losses:
        assert loss == pytest.approx(tail[step], abs=1e-6, rel=0), f"step {step}"
