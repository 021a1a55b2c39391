"""Which device `medvl infer` and `evaluate` put their models on, alone and as a launcher rank."""

from __future__ import annotations

import pytest
import torch

from medvl.data.processes import pick_device, resolve_device


@pytest.mark.parametrize(
    ("name", "gpus", "environ", "expected"),
    [
        ("auto", 0, {}, "cpu"),
        ("auto", 0, {"LOCAL_RANK": "1"}, "cpu"),
        ("auto", 2, {}, "cuda"),
        ("auto", 2, {"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, "cuda:1"),
        ("cuda", 4, {"LOCAL_RANK": "3"}, "cuda:3"),
        ("cuda", 4, {"LOCAL_RANK": "0"}, "cuda:0"),
        ("cuda:1", 4, {"LOCAL_RANK": "3"}, "cuda:1"),  # an explicit index wins
        ("cpu", 4, {"LOCAL_RANK": "3"}, "cpu"),
    ],
)
def test_each_rank_takes_its_own_gpu(name, gpus, environ, expected):
    assert pick_device(name, gpus, environ) == torch.device(expected)


def test_more_ranks_than_gpus_is_named():
    with pytest.raises(ValueError, match="local rank 2 needs GPU 2, but 2 are visible"):
        pick_device("cuda", 2, {"LOCAL_RANK": "2"})


def test_resolve_device_reads_the_launcher_environment(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
