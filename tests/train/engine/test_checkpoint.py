"""Checkpoint files: atomic writes, keep-last-K, RNG round trip, weights-only loading."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from train_toys import ToyNet

from medvl.train.engine.checkpoint import (
    CheckpointManager,
    capture_rng,
    load_model_weights,
    load_optim_state,
    read_state,
    restore_rng,
    step_dir_name,
)


def save_step(manager: CheckpointManager, model: torch.nn.Module, step: int) -> None:
    optim = torch.optim.AdamW(model.parameters())
    manager.save(step_dir_name(step), model, {"step": step}, {"optimizer": optim.state_dict()})


def test_keeps_only_the_last_k_step_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    model = ToyNet()
    for step in (5, 10, 15, 20):
        save_step(manager, model, step)
    assert [p.name for p in manager.step_checkpoints()] == ["step-00000015", "step-00000020"]
    manager.save("best", model, {"step": 10})
    save_step(manager, model, 25)
    assert (tmp_path / "best").is_dir()  # best is never pruned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step-00000020", "step-00000025"]


def test_an_interrupted_write_is_never_taken_for_a_checkpoint(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=3)
    model = ToyNet()
    save_step(manager, model, 1)

    def die(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", die)
    with pytest.raises(OSError, match="disk full"):
        save_step(manager, model, 2)
    monkeypatch.undo()
    assert manager.latest() == tmp_path / "step-00000001"
    assert not (tmp_path / "step-00000002").exists()
    # a directory without state.json (e.g. copied by hand, half-finished) is ignored too
    (tmp_path / "step-00000009").mkdir()
    assert manager.latest() == tmp_path / "step-00000001"
    save_step(manager, model, 2)  # the leftover temp dir does not block the next save
    assert manager.latest() == tmp_path / "step-00000002"
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_resaving_a_name_replaces_it_whole(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1)
    model = ToyNet()
    manager.save("best", model, {"step": 1})
    with torch.no_grad():
        model.head.bias.fill_(3.0)
    manager.save("best", model, {"step": 2})
    fresh = ToyNet()
    load_model_weights(fresh, tmp_path / "best")
    assert read_state(tmp_path / "best")["step"] == 2
    assert torch.equal(fresh.head.bias, torch.full((1,), 3.0))


def test_optimizer_state_loads_weights_only(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1)
    model = ToyNet()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 8)).sum().backward()
    optim.step()
    manager.save("step-00000001", model, {"step": 1}, {"optimizer": optim.state_dict()})
    loaded = load_optim_state(tmp_path / "step-00000001")["optimizer"]
    fresh = torch.optim.AdamW(ToyNet().parameters(), lr=1e-3)
    fresh.load_state_dict(loaded)
    exp_avg = optim.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], exp_avg)


def test_rng_states_round_trip():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == expected


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.json"):
        read_state(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model_weights(ToyNet(), tmp_path)
