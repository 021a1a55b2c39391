"""Engine behaviour on a toy regression task: learning, resume, NaN stop, best and early stop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from train_toys import ToyNet, ToyRegression, toy_eval, toy_loss

from medvl.train.engine import Engine, EngineConfig, NonFiniteLossError
from medvl.train.engine.checkpoint import read_state
from medvl.train.engine.run_log import read_metrics


def make_engine(out: Path, **overrides) -> Engine:
    settings = dict(
        output_dir=out,
        max_steps=12,
        batch_size=8,
        lr=5e-3,
        warmup_steps=2,
        log_every=1,
        progress=False,
        tensorboard=False,
    )
    settings.update(overrides)
    return Engine(EngineConfig(**settings))


class SimulatedCrashError(RuntimeError):
    """Stands in for a killed process."""


def crashing(after_calls: int):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise SimulatedCrashError("simulated crash")
        return toy_loss(model, batch)

    return loss_fn


def test_fit_learns_and_writes_run_files(tmp_path, toy_data):
    engine = make_engine(tmp_path, max_steps=40, lr=1e-2, tensorboard=True, eval_every=20)
    model = ToyNet()
    val = ToyRegression(seed=1)
    before = toy_eval(val)(model)["neg_mse"]
    result = engine.fit(model, engine.make_loader(toy_data), toy_loss, toy_eval(val))
    assert result.step == 40 and len(result.losses) == 40
    assert result.evals[-1]["neg_mse"] > before / 4  # validation MSE at least 4x lower
    rows = read_metrics(tmp_path)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 41))
    assert {"train/lr", "train/grad_norm", "train/pred_mean"} <= set(train_rows[0])
    assert all(r["train/samples_per_s"] > 0 for r in train_rows)  # batch 8 per step, timed
    assert [r["step"] for r in rows if "eval/neg_mse" in r] == [20, 40]
    assert any((tmp_path / "tensorboard").iterdir())
    assert (tmp_path / "engine.yaml").is_file()
    assert result.last_checkpoint == tmp_path / "checkpoints" / "step-00000040"


def test_warmup_then_cosine_reaches_floor(tmp_path, toy_data):
    engine = make_engine(tmp_path, max_steps=10, warmup_steps=4, min_lr_ratio=0.1, lr=1e-2)
    engine.fit(ToyNet(), engine.make_loader(toy_data), toy_loss)
    lrs = [r["train/lr"] for r in read_metrics(tmp_path)]
    assert lrs[:5] == pytest.approx([2e-3, 4e-3, 6e-3, 8e-3, 1e-2])  # LR used by steps 1..5
    last = 1e-3 + 9e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 6))  # step 10: 5/6 of the decay
    assert lrs[-1] == pytest.approx(last)
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:], strict=False))


@pytest.mark.parametrize("stop_at", [7, 6])  # mid-epoch, and exactly at an epoch boundary
def test_interrupted_run_resumes_on_the_same_trajectory(tmp_path, toy_data, stop_at):
    # 40 samples, batch 8, grad_accum 2: 5 micro-batches = 3 steps per epoch (2 + 2 + 1).
    data = ToyRegression(n=40)
    common = dict(max_steps=14, grad_accum=2, checkpoint_every=stop_at, keep_last=3)
    torch.manual_seed(0)
    full_engine = make_engine(tmp_path / "full", **common)
    full = full_engine.fit(ToyNet(), full_engine.make_loader(data), toy_loss)

    torch.manual_seed(0)
    first = make_engine(tmp_path / "split", **common)
    calls_to_checkpoint = (stop_at // 3) * 5 + (stop_at % 3) * 2
    with pytest.raises(SimulatedCrashError):
        first.fit(ToyNet(), first.make_loader(data), crashing(calls_to_checkpoint + 1))
    assert read_state(tmp_path / "split" / "checkpoints" / f"step-{stop_at:08d}")["step"] == stop_at

    torch.manual_seed(123)  # a fresh process: different init, overwritten by the checkpoint
    second = make_engine(tmp_path / "split", **common)
    resumed = second.fit(ToyNet(), second.make_loader(data), toy_loss)
    assert resumed.resumed_from == stop_at
    assert resumed.final_loss == pytest.approx(full.final_loss, abs=1e-5, rel=0)
    tail = dict(full.losses[stop_at:])
    for step, loss in resumed.losses:
        assert loss == pytest.approx(tail[step], abs=1e-6, rel=0), f"step {step}"
    rows = read_metrics(tmp_path / "split")
    assert [r["step"] for r in rows] == list(range(1, 15))  # crashed rows dropped, no duplicates


def test_non_finite_loss_stops_with_the_step(tmp_path, toy_data):
    engine = make_engine(tmp_path)

    def loss_fn(model, batch):
        loss, logs = toy_loss(model, batch)
        return (loss * math.nan if engine_calls.append(1) or len(engine_calls) == 4 else loss), logs

    engine_calls: list[int] = []
    model = ToyNet()
    with pytest.raises(NonFiniteLossError, match="loss is nan at optimizer step 4") as err:
        engine.fit(model, engine.make_loader(toy_data), loss_fn)
    assert err.value.step == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_best_checkpoint_and_early_stopping(tmp_path, toy_data):
    val = ToyRegression(seed=1)
    scores = iter([1.0, 3.0, 2.0, 2.5, 2.9, 5.0])

    def scripted_eval(model):
        return {"score": next(scores), "neg_mse": toy_eval(val)(model)["neg_mse"]}

    engine = make_engine(
        tmp_path, max_steps=12, eval_every=2, best_metric="score", early_stopping_patience=3
    )
    result = engine.fit(ToyNet(), engine.make_loader(toy_data), toy_loss, scripted_eval)
    assert result.stopped_early and result.step == 10
    assert (result.best_step, result.best_value) == (4, 3.0)
    assert read_state(result.best_checkpoint)["best_step"] == 4
    assert not (result.best_checkpoint / "optimizer.pt").exists()  # weights-only


def test_eval_at_start_lets_the_starting_weights_win(tmp_path, toy_data):
    from medvl.train.engine.checkpoint import load_model_weights

    scores = iter([9.0, 1.0, 2.0, 3.0])
    engine = make_engine(
        tmp_path, max_steps=6, eval_every=2, best_metric="score", eval_at_start=True
    )
    torch.manual_seed(0)
    model = ToyNet()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    result = engine.fit(
        model, engine.make_loader(toy_data), toy_loss, lambda m: {"score": next(scores)}
    )
    assert [e["step"] for e in result.evals] == [0, 2, 4, 6]
    assert (result.best_step, result.best_value) == (0, 9.0)
    assert not torch.equal(model.state_dict()["head.weight"], start["head.weight"])
    load_model_weights(model, result.best_checkpoint)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, start[name]), name


def test_unknown_best_metric_is_named(tmp_path, toy_data):
    engine = make_engine(tmp_path, max_steps=2, eval_every=1, best_metric="auroc")
    with pytest.raises(KeyError, match="auroc.*neg_mse"):
        engine.fit(ToyNet(), engine.make_loader(toy_data), toy_loss, toy_eval(toy_data))


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    data = ToyRegression(n=32)
    runs = {}
    for name, batch, accum in (("big", 16, 1), ("accum", 8, 2)):
        torch.manual_seed(0)
        engine = make_engine(tmp_path / name, max_steps=6, batch_size=batch, grad_accum=accum)
        model = ToyNet(dropout=0.0)
        engine.fit(model, engine.make_loader(data, shuffle=False), toy_loss)
        runs[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(runs["accum"], runs["big"], atol=1e-5, rtol=1e-5)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="grad_accum"):
        EngineConfig(grad_accum=0)
    with pytest.raises(ValueError, match="max_steps"):
        EngineConfig(max_steps=0, epochs=0)


def test_engine_needs_an_output_dir():
    assert EngineConfig().output_dir is None  # a job sets it from its own output_dir
    with pytest.raises(ValueError, match="output_dir is not set"):
        Engine(EngineConfig())


def test_saved_state_is_plain_json(tmp_path, toy_data):
    engine = make_engine(tmp_path, max_steps=3)
    engine.fit(ToyNet(), engine.make_loader(toy_data), toy_loss)
    state = json.loads((tmp_path / "checkpoints" / "step-00000003" / "state.json").read_text())
    assert state["step"] == 3 and state["num_processes"] == 1


def test_resume_never_starts_clean(tmp_path, toy_data):
    engine = make_engine(tmp_path, max_steps=3)
    engine.fit(ToyNet(), engine.make_loader(toy_data), toy_loss)
    fresh = make_engine(tmp_path, max_steps=2, resume="never")
    result = fresh.fit(ToyNet(), fresh.make_loader(toy_data), toy_loss)
    assert result.resumed_from == 0 and result.step == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002"]
