"""Random radiograph augmentation of a whole batch at once, seeded by the batch itself.

:func:`medvl.data.transforms.augment_transforms` (MONAI, one sample at a time) costs about
2.7 ms per 64 px image on a CPU core; for tiny image towers that is more than the training
step. :class:`BatchAugment` draws the same kinds of change (rotation, isotropic scale and shift
in one affine resampling, then brightness and gamma), each with probability ``prob``, for the
whole ``(B, 1, H, W)`` batch in one ``affine_grid`` + ``grid_sample`` call: about 30x less time
per batch, and it runs on whatever device the batch is on: training runs it through
:meth:`medvl.data.datasets.PairDataset.on_device`, the engine's ``on_device`` hook, once the
batch is on the training device (the GPU when there is one).

The random draws come from a generator seeded with ``seed`` and the batch's image ids, so a
batch is augmented the same way whenever the same samples meet in it (what the engine's
kill-and-resume exactness needs), while a sample gets new draws in every new batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class BatchAugment:
    """Per-sample random affine + intensity changes applied to a batch in one pass.

    Parameters
    ----------
    prob
        Probability of each of the affine, brightness and gamma changes, per sample.
    rotate_deg, scale, translate
        Rotation of at most ``rotate_deg`` degrees, zoom by ``1 +/- scale``, shift of at most
        ``translate`` of the side; areas moved in from outside are zero.
    brightness
        Intensities scaled by ``1 + u`` with ``u`` in ``[-brightness, brightness]``.
    contrast
        Gamma range applied to the min-max normalised image (MONAI's ``AdjustContrast``).
    seed
        Base seed mixed with the batch's image ids.
    """

    prob: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.25)
    seed: int = 0

    def generator(self, ids: Sequence[str]) -> torch.Generator:
        """A CPU generator seeded by ``seed`` and the batch's ids, in order."""
        digest = hashlib.sha256(f"{self.seed}|{'|'.join(ids)}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))

    def __call__(self, images: Tensor, ids: Sequence[str]) -> Tensor:
        """Augmented copy of ``images`` ``(B, C, H, W)`` in [0, 1], clipped back to [0, 1]."""
        if images.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
        b = images.shape[0]
        g = self.generator(ids)

        def uniform(low: float, high: float) -> Tensor:
            return low + (high - low) * torch.rand(b, generator=g)

        def chosen() -> Tensor:
            return torch.rand(b, generator=g) < self.prob

        affine, bright, gamma_on = chosen(), chosen(), chosen()
        angle = torch.where(affine, uniform(-1, 1) * math.radians(self.rotate_deg), 0.0)
        zoom = torch.where(affine, 1 + uniform(-self.scale, self.scale), 1.0)
        offsets = torch.stack([uniform(-1, 1), uniform(-1, 1)], dim=1) * 2 * self.translate
        shift = torch.where(affine[:, None], offsets, 0.0)  # normalised coordinates span 2
        factor = torch.where(bright, 1 + uniform(-self.brightness, self.brightness), 1.0)
        gamma = torch.where(gamma_on, uniform(*self.contrast), 1.0)

        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        ).to(images.device, images.dtype)
        x = images
        if bool(affine.any()):
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)
            x = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
        x = x * factor.to(x)[:, None, None, None]
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        span = (x.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-8)
        x = ((x - low) / span).pow(gamma.to(x)[:, None, None, None]) * span + low
        return x.clamp(0.0, 1.0)
