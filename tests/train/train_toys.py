"""Toy regression task for engine tests: small, deterministic, with dropout so RNG matters.

Plain classes and functions (no fixtures): the tests import them and the subprocess workers of
the distributed and kill tests load this file by path. Its name is unique across tests/ so a
plain import never picks up another folder's module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class ToyRegression(Dataset):
    """``n`` samples of y = x @ w + noise; ``w`` comes from ``task_seed``, ``x`` from ``seed``."""

    def __init__(self, n: int = 64, dim: int = 8, seed: int = 0, task_seed: int = 0) -> None:
        w = torch.randn(dim, 1, generator=torch.Generator().manual_seed(task_seed))
        g = torch.Generator().manual_seed(1000 + seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ w + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class ToyNet(nn.Module):
    """MLP: ``stem`` -> two residual hidden blocks (with dropout) -> ``head``."""

    def __init__(self, dim: int = 8, hidden: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.stem = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
            for _ in range(2)
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def toy_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Mean squared error, plus the prediction mean as an extra logged scalar."""
    pred = model(batch["x"])
    return nn.functional.mse_loss(pred, batch["y"]), {"pred_mean": pred.mean().detach()}


def toy_eval(data: ToyRegression):
    """An eval_fn returning the negated validation MSE (higher is better)."""

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"neg_mse": -float(nn.functional.mse_loss(model(data.x), data.y))}

    return evaluate
