"""Faults in run files: a kill during a log write, damaged checkpoints, a full disk, reruns."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from medvl.io.durable import DiskFullError, append_jsonl, read_jsonl, write_text_atomic
from medvl.train.engine import Engine, EngineConfig
from medvl.train.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    checkpoint_problem,
    read_state,
)
from medvl.train.engine.run_log import read_metrics


def toy_data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(32, 1, generator=g))


def toy_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))


def toy_loss(model: nn.Module, batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
    return nn.functional.mse_loss(model(batch[0]), batch[1]), {}


def toy_eval(model: nn.Module) -> dict[str, float]:
    x, y = toy_data().tensors
    return {"neg_mse": -float(nn.functional.mse_loss(model(x), y))}


def fit(out: Path, steps: int, **overrides):
    settings = dict(
        output_dir=out,
        max_steps=steps,
        batch_size=8,
        lr=1e-2,
        schedule="constant",  # a run cut at step 8 and one of 12 steps share their LRs
        log_every=1,
        checkpoint_every=4,
        keep_last=3,
        progress=False,
        tensorboard=False,
        best_metric="neg_mse",
        eval_every=4,
    )
    settings.update(overrides)
    engine = Engine(EngineConfig(**settings))
    model = toy_net()
    result = engine.fit(model, engine.make_loader(toy_data()), toy_loss, toy_eval)
    return result, model


def test_torn_last_line_is_dropped_and_repaired(tmp_path, caplog):
    file = tmp_path / "metrics.jsonl"
    file.write_text('{"step": 1, "train/loss": 0.5}\n{"step": 2, "train/lo')
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(file) == [{"step": 1, "train/loss": 0.5}]
    assert f"{file}: last line is incomplete" in caplog.text
    assert file.read_text() == '{"step": 1, "train/loss": 0.5}\n'


def test_damage_before_the_last_line_is_an_error_naming_file_and_line(tmp_path):
    file = tmp_path / "metrics.jsonl"
    file.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match=rf"{file}: line 2 is not valid JSON"):
        read_jsonl(file)


def test_kill_during_log_write_does_not_block_the_rerun(tmp_path, caplog):
    """The run dies after step 8's checkpoint while writing a row; the rerun continues."""
    fit(tmp_path, 8)
    metrics = tmp_path / "metrics.jsonl"
    with metrics.open("a") as fh:
        fh.write('{"step": 9, "train/loss": 0.12')  # the half-written row of a killed run
    with caplog.at_level(logging.WARNING):
        result, _ = fit(tmp_path, 12)
    assert result.resumed_from == 8 and result.step == 12
    assert f"{metrics}: last line is incomplete" in caplog.text
    steps = [r["step"] for r in read_metrics(tmp_path) if "train/loss" in r]
    assert steps == list(range(1, 13))


@pytest.mark.parametrize(
    ("victim", "damage"),
    [
        ("optimizer.pt", "truncate"),
        ("model.safetensors", "truncate"),
        ("state.json", "garble"),
        ("rng-0.pt", "delete"),
    ],
)
def test_damaged_newest_checkpoint_falls_back_to_the_newest_intact(
    tmp_path, caplog, victim, damage
):
    straight, straight_model = fit(tmp_path / "straight", 12)
    fit(tmp_path / "run", 8)
    newest = tmp_path / "run" / "checkpoints" / "step-00000008"
    file = newest / victim
    if damage == "truncate":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    elif damage == "garble":
        file.write_text('{"step": 8, "epo')
    else:
        file.unlink()
    assert checkpoint_problem(newest) is not None
    with caplog.at_level(logging.WARNING):
        result, model = fit(tmp_path / "run", 12)
    assert result.resumed_from == 4
    assert "checkpoint step-00000008 skipped:" in caplog.text
    assert victim in caplog.text
    # Resuming from step 4 follows the uninterrupted trajectory bit for bit.
    assert result.losses == straight.losses[4:]
    for a, b in zip(model.parameters(), straight_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_no_intact_checkpoint_is_an_error_not_a_silent_restart(tmp_path):
    fit(tmp_path, 4)
    state = tmp_path / "checkpoints" / "step-00000004" / "state.json"
    state.write_text("[]")
    with pytest.raises(CheckpointError, match="no intact checkpoint.*train.resume=never") as err:
        fit(tmp_path, 8)
    assert f"the newest: {state}: not a checkpoint state" in str(err.value)


def test_checkpoints_record_the_hash_of_every_file(tmp_path):
    fit(tmp_path, 4)
    state = read_state(tmp_path / "checkpoints" / "step-00000004")
    assert set(state["files"]) == {"model.safetensors", "optimizer.pt", "rng-0.pt"}
    assert all(len(d) == 64 for d in state["files"].values())


def test_rerunning_a_finished_run_changes_nothing(tmp_path):
    fit(tmp_path, 8, eval_every=0, checkpoint_every=8)
    before = (tmp_path / "metrics.jsonl").read_bytes()
    ckpt = tmp_path / "checkpoints" / "step-00000008"
    stamp = (ckpt / "state.json").stat().st_mtime_ns
    result, _ = fit(tmp_path, 8, eval_every=0, checkpoint_every=8)
    assert result.resumed_from == 8 and result.losses == [] and result.evals == []
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
    evals = [r for r in read_metrics(tmp_path) if "eval/neg_mse" in r]
    assert [r["step"] for r in evals] == [4, 8]
    assert (ckpt / "state.json").stat().st_mtime_ns == stamp


def test_rerunning_an_early_stopped_run_does_not_train_on(tmp_path):
    def worse(model):
        worse.calls += 1
        return {"neg_mse": -float(worse.calls)}  # never improves after the first

    worse.calls = 0
    settings = dict(
        output_dir=tmp_path, max_steps=40, batch_size=8, eval_every=2, checkpoint_every=2,
        best_metric="neg_mse", early_stopping_patience=2, progress=False, tensorboard=False,
    )  # fmt: skip
    engine = Engine(EngineConfig(**settings))
    first = engine.fit(toy_net(), engine.make_loader(toy_data()), toy_loss, worse)
    assert first.stopped_early and first.step == 6
    engine = Engine(EngineConfig(**settings))
    again = engine.fit(toy_net(), engine.make_loader(toy_data()), toy_loss, worse)
    assert again.stopped_early and again.step == 6 and again.losses == []


class Big(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(256, 1024))  # 1 MiB of float32


def test_disk_full_during_checkpoint_is_one_error_and_leaves_no_temp(
    tmp_path, small_disk, monkeypatch
):
    disk = small_disk(1_600_000)  # room for one checkpoint of 1 MiB, not two
    if disk is None:  # not root: make the write fail as torch.save does on a full disk
        disk = tmp_path / "disk"
        monkeypatch.setattr(
            "medvl.train.engine.checkpoint.save_model",
            lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")),
        )
    else:
        CheckpointManager(disk / "ckpt", keep_last=3).save("step-00000001", Big(), {"step": 1})
    manager = CheckpointManager(disk / "ckpt", keep_last=3)
    with pytest.raises(DiskFullError) as caught:
        manager.save("step-00000002", Big(), {"step": 2})
    message = str(caught.value)
    assert message.startswith(f"{disk / 'ckpt'}: disk full while writing checkpoint step-00000002")
    assert "free, about 1.0 MB needed" in message
    assert "\n" not in message
    assert not list((disk / "ckpt").glob(".tmp-*"))
    if (disk / "ckpt" / "step-00000001").exists():
        assert checkpoint_problem(disk / "ckpt" / "step-00000001") is None


def test_disk_full_during_log_writes_leaves_no_torn_line_or_temp(small_disk):
    disk = small_disk(64 * 1024)
    if disk is None:
        pytest.skip("needs root to mount a tmpfs")
    log = disk / "metrics.jsonl"
    append_jsonl(log, {"step": 1})
    with pytest.raises(DiskFullError, match=rf"{disk}: disk full while writing metrics.jsonl"):
        for step in range(2, 100_000):
            append_jsonl(log, {"step": step, "pad": "x" * 500})
    rows = read_jsonl(log)  # no torn line: every row parses
    assert rows[0] == {"step": 1} and rows[-1]["step"] == len(rows)
    with pytest.raises(DiskFullError, match="disk full while writing images.jsonl"):
        write_text_atomic(disk / "images.jsonl", "x" * 200_000)
    assert not list(disk.glob("*.tmp"))
    assert json.loads(log.read_text().splitlines()[0]) == {"step": 1}


def test_a_pickle_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    import os

    from medvl.models.hub import sha256_file

    fit(tmp_path, 4)
    ckpt = tmp_path / "checkpoints" / "step-00000004"
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"optimizer": Payload()}, ckpt / "optimizer.pt")
    state = json.loads((ckpt / "state.json").read_text())
    state["files"]["optimizer.pt"] = sha256_file(ckpt / "optimizer.pt")  # passes the hash check
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError) as caught:
        fit(tmp_path, 8, resume=str(ckpt))
    message = str(caught.value)
    assert message.startswith(f"{ckpt / 'optimizer.pt'}: cannot be read (") and "\n" not in message
    assert not marker.exists()


def test_disk_full_while_saving_a_model_leaves_no_temp_file(small_disk, monkeypatch, tmp_path):
    from medvl.models.hub import save_state_atomic

    disk = small_disk(256 * 1024)
    if disk is None:  # not root: the write fails as safetensors reports a full disk
        disk = tmp_path / "disk"

        def full(*args, **kwargs):
            raise RuntimeError("Error while serializing: I/O error: No space left on device")

        monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(DiskFullError) as caught:
        save_state_atomic(Big(), disk / "model" / "model.safetensors", "medvl-test")
    assert str(caught.value).startswith(
        f"{disk / 'model'}: disk full while writing model.safetensors"
    )
    assert "about 1.0 MB needed" in str(caught.value)
    assert list((disk / "model").iterdir()) == []


def test_torn_lines_in_the_sam_cache_logs_are_dropped(tmp_path, caplog):
    from medvl.models.sam.cache import FileHashMemo

    memo = tmp_path / "file_hashes.jsonl"
    row = {"path": "/x.dcm", "size": 1, "mtime_ns": 2, "sha256": "ab"}
    memo.write_text(json.dumps(row) + '\n{"path": "/y.dcm", "si')
    with caplog.at_level(logging.WARNING):
        loaded = FileHashMemo(memo)
    assert loaded._memo == {("/x.dcm", 1, 2): "ab"}
    assert f"{memo}: last line is incomplete" in caplog.text
