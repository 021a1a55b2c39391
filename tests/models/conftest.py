"""Fixtures for model tests: a tiny aligner (small CNN + 2-layer BERT) built offline."""

from __future__ import annotations

import pytest
import torch

from medvl.models import MedVLAligner, create_aligner

REPORTS = [
    "No acute cardiopulmonary abnormality.",
    "Large right pleural effusion with adjacent atelectasis.",
    "The heart is enlarged. Mild pulmonary edema.",
    "Small left apical pneumothorax.",
]


@pytest.fixture
def tiny_aligner() -> MedVLAligner:
    """A fresh, seeded tiny aligner (tests may train or modify it)."""
    torch.manual_seed(0)
    return create_aligner("tiny")


@pytest.fixture
def pixels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(len(REPORTS), 1, 64, 64, generator=generator)


@pytest.fixture
def reports() -> list[str]:
    return list(REPORTS)
