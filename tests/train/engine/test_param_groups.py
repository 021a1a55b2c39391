"""Blocks, discriminative learning rates, freezing schedules and the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch
from train_toys import ToyNet, ToyRegression, toy_loss

from medvl.train.engine import (
    Engine,
    EngineConfig,
    FreezeConfig,
    FreezeSchedule,
    ModelBlocks,
    discriminative_param_groups,
)
from medvl.train.engine.run_log import read_metrics
from medvl.train.engine.schedule import WarmupDecay


def toy_blocks(model: ToyNet) -> ModelBlocks:
    return ModelBlocks.from_modules(model, head=[model.head], blocks=model.blocks)


def test_blocks_cover_every_parameter_once():
    model = ToyNet()
    blocks = toy_blocks(model)
    assert [b.name for b in blocks.blocks] == ["stem", "block00", "block01"]
    names = [n for b in [*blocks.blocks, blocks.head] for n, _ in b.params]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    by_prefix = ModelBlocks.from_prefixes(model, head=["head"], blocks=["blocks.0", "blocks.1"])
    assert [[n for n, _ in b.params] for b in by_prefix.blocks] == [
        [n for n, _ in b.params] for b in blocks.blocks
    ]


def test_discriminative_lrs_fall_from_head_to_bottom():
    groups = discriminative_param_groups(
        toy_blocks(ToyNet()), lr=1.0, layer_decay=0.5, weight_decay=0.1
    )
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {
        "head": 1.0,
        "head/no_decay": 1.0,
        "block01": 0.5,
        "block01/no_decay": 0.5,
        "block00": 0.25,
        "block00/no_decay": 0.25,
        "stem": 0.125,
        "stem/no_decay": 0.125,
    }
    assert all(g["weight_decay"] == 0.0 for g in groups if g["name"].endswith("no_decay"))
    assert all(p.ndim == 1 for g in groups if g["name"].endswith("no_decay") for p in g["params"])


def test_frozen_base_parameters_are_left_out():
    model = ToyNet()
    for p in model.stem.parameters():
        p.requires_grad_(False)
    assert [b.name for b in toy_blocks(model).blocks] == ["block00", "block01"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (FreezeConfig("none"), [3, 3, 3, 3, 3, 3]),
        (FreezeConfig("head_only"), [0, 0, 0, 0, 0, 0]),
        (FreezeConfig("two_stage", head_steps=2, top_blocks=1), [0, 0, 1, 1, 1, 1]),
        (FreezeConfig("two_stage", head_steps=2), [0, 0, 3, 3, 3, 3]),
        (FreezeConfig("progressive", head_steps=1, every=2), [0, 1, 1, 2, 2, 3]),
    ],
)
def test_freeze_strategies_thaw_blocks_top_down(config, expected):
    schedule = FreezeSchedule(toy_blocks(ToyNet()), config)
    assert [schedule.thawed_blocks(step) for step in range(6)] == expected


def test_two_stage_training_moves_only_what_is_thawed(tmp_path):
    model = ToyNet(dropout=0.0)
    blocks = toy_blocks(model)
    schedule = FreezeSchedule(blocks, FreezeConfig("two_stage", head_steps=3, top_blocks=1))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    engine = Engine(
        EngineConfig(
            output_dir=tmp_path,
            max_steps=3,
            batch_size=8,
            lr=1e-2,
            progress=False,
            tensorboard=False,
            log_every=1,
        )
    )
    groups = discriminative_param_groups(blocks, lr=1e-2, layer_decay=0.5)
    loader = engine.make_loader(ToyRegression())
    result = engine.fit(model, loader, toy_loss, param_groups=groups, freeze=schedule)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    assert moved == {"head.weight", "head.bias"}
    assert result.trainable_parameters == 17

    engine.config.max_steps = 6  # continue the same run into stage two
    result = engine.fit(model, loader, toy_loss, param_groups=groups, freeze=schedule)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    assert moved == {"head.weight", "head.bias", "blocks.1.0.weight", "blocks.1.0.bias"}
    assert result.resumed_from == 3 and result.trainable_parameters == 17 + 272
    lrs = [r["train/lr"] for r in read_metrics(tmp_path)]  # first group = head, at lr 1e-2
    assert lrs[3] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))  # new length


def test_warmup_decay_shapes():
    cosine = WarmupDecay("cosine", warmup_steps=2, total_steps=12, min_ratio=0.0)
    assert [cosine(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert cosine(7) == pytest.approx(0.5)
    assert cosine(12) == pytest.approx(0.0) and cosine(50) == pytest.approx(0.0)
    assert WarmupDecay("constant", 0, 10)(9) == 1.0
    assert WarmupDecay("linear", 0, 10, min_ratio=0.2)(5) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="schedule"):
        WarmupDecay("step", 0, 10)  # type: ignore[arg-type]
