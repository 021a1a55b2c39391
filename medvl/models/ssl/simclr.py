"""SimCLR (Chen et al., 2020) for an image tower: two augmented views, one NT-Xent loss.

The tower's pooled features pass through a two-layer projection MLP; MONAI's
``ContrastiveLoss`` (the normalised-temperature cross-entropy of the SimCLR paper: cosine
similarities, every other view in the batch a negative) compares the two views. It sees the
local batch only: under DDP each process contrasts its own views (the negatives do not span
the global batch as the image-report losses' do).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medvl.models.towers.image import ImageTower


class SimCLR(nn.Module):
    """NT-Xent of two views through ``tower`` + a projection MLP; ``forward`` returns the loss.

    Parameters
    ----------
    tower
        The image tower to pretrain (trained in place; the projection is discarded afterwards).
    temperature
        NT-Xent temperature.
    projection_dim
        Width of the projection MLP's hidden layer and output.
    """

    def __init__(self, tower: ImageTower, temperature: float = 0.2, projection_dim: int = 128):
        from monai.losses import ContrastiveLoss

        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.tower = tower
        self.projection = nn.Sequential(
            nn.Linear(tower.out_dim, projection_dim),
            nn.ReLU(),
            nn.Linear(projection_dim, projection_dim),
        )
        self.loss = ContrastiveLoss(temperature=temperature)

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        """NT-Xent of two ``(B, 1, H, W)`` views of the same ``B`` images.

        Both views go through the tower as one batch: one pass, and the tiny CNN's GroupNorm
        does not mix samples (a batch-norm tower would share statistics across the views).
        """
        both = self.projection(self.tower.encode(torch.cat([view_a, view_b])))
        first, second = both.chunk(2)
        return self.loss(first, second)
