"""Fixtures for training tests (the toy task itself lives in train_toys.py)."""

from __future__ import annotations

import pytest
import torch
from train_toys import ToyRegression


@pytest.fixture
def toy_data() -> ToyRegression:
    return ToyRegression()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine run several times faster single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_aligner():
    """A fresh, seeded tiny aligner (small CNN + 2-layer BERT)."""
    from medvl.models import create_aligner

    torch.manual_seed(0)
    return create_aligner("tiny")


@pytest.fixture(scope="session")
def small_phantoms(tmp_path_factory):
    """40 phantom studies at 64 px (studies.jsonl), shared by the fine-tuning smoke tests."""
    from medvl.data.phantom import generate_phantoms

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("phantoms_small")
    return generate_phantoms(40, out, seed=1, size=64, workers=1, progress=False)
