"""Prompt simulation from ground-truth masks: jittered boxes and positive/negative points.

Training prompts must look like a clinician's: a box drawn roughly around the structure, a few
clicks. Everything here works on whole batches of torch tensors in SAM's model frame, draws from
torch's global RNG (or a given generator), so the engine's checkpointed RNG state makes resumed
runs reproduce the same prompts.

Box jitter modes (``max_px`` is in pixels of a 1024 px input and scales with ``img_size``):

- ``medsam``: each side moves *outward* by an integer in [0, max_px] (MedSAM's ``bbox_shift``
  of 20 px): the box never cuts the structure.
- ``sam``: every coordinate gets Gaussian noise with std ``ratio`` x the box side, clipped to
  +-max_px (the SAM paper: 10 % of the side, at most 20 px); the box may cut the structure.
- ``sam_med2d``: the whole box is translated by an integer in [-m, m] on each axis, with
  m = min(max_px, half the shorter side) (SAM-Med2D uses max_px = 5).
- ``none``: the tight box.

Unlike SAM-Med2D, which boxes only the largest connected component, the box covers the whole
mask: "lungs" are two components, and one box prompt names the structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

JitterMode = Literal["none", "medsam", "sam", "sam_med2d"]
JITTER_MODES = ("none", "medsam", "sam", "sam_med2d")
REFERENCE_SIZE = 1024


@dataclass
class PromptConfig:
    """Which prompts training simulates, and how noisy they are."""

    box: bool = True
    jitter: JitterMode = "medsam"
    jitter_px: float = 20.0  # in pixels of a 1024 px input; scaled to img_size
    jitter_ratio: float = 0.1  # `sam` mode: noise std as a fraction of the box side
    positive_points: int = 0
    negative_points: int = 0

    def __post_init__(self) -> None:
        if self.jitter not in JITTER_MODES:
            raise ValueError(f"jitter must be one of {JITTER_MODES}, got {self.jitter!r}")
        if self.positive_points < 0 or self.negative_points < 0:
            raise ValueError("point counts must be >= 0")
        if not self.box and self.positive_points + self.negative_points == 0:
            raise ValueError("prompts need a box or at least one point")
        if self.jitter_px < 0 or self.jitter_ratio < 0:
            raise ValueError("jitter_px and jitter_ratio must be >= 0")

    @property
    def n_points(self) -> int:
        """Points per prompt (positive + negative)."""
        return self.positive_points + self.negative_points


def _uniform_int(shape: tuple[int, ...], high: Tensor, generator: torch.Generator | None) -> Tensor:
    """Integers uniform in [0, high] (inclusive), elementwise; ``high`` broadcasts to ``shape``."""
    u = torch.rand(shape, generator=generator, device=high.device)
    return torch.floor(u * (high + 1.0))


def jitter_boxes(
    boxes: Tensor,
    input_sizes: Tensor,
    mode: JitterMode = "medsam",
    max_px: float = 20.0,
    ratio: float = 0.1,
    img_size: int = REFERENCE_SIZE,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Noisy copies of tight xyxy ``boxes`` (B, 4) in the model frame, clamped to the image.

    ``input_sizes`` (B, 2) holds each image's (h, w) inside the padded input, so a jittered box
    never reaches into the padding.
    """
    boxes = boxes.float()
    if mode == "none" or max_px == 0:
        return boxes.clone()
    limit = max_px * img_size / REFERENCE_SIZE
    sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)
    b = boxes.shape[0]
    device = boxes.device
    if mode == "medsam":
        cap = torch.full((b, 4), float(int(limit)), device=device)
        shift = _uniform_int((b, 4), cap, generator)
        out = boxes + shift * torch.tensor([-1.0, -1.0, 1.0, 1.0], device=device)
    elif mode == "sam":
        std = ratio * sides.repeat(1, 2)
        noise = torch.randn((b, 4), generator=generator, device=device) * std
        out = boxes + noise.clamp(-limit, limit)
    elif mode == "sam_med2d":
        cap = torch.minimum(
            torch.floor(sides.min(dim=1, keepdim=True).values / 2),
            torch.tensor(float(int(limit)), device=device),
        )
        cap = cap.clamp(min=0).expand(b, 2)
        offset = _uniform_int((b, 2), 2 * cap, generator) - cap
        out = boxes + offset.repeat(1, 2)
    else:
        raise ValueError(f"unknown jitter mode {mode!r}")
    return clamp_boxes(out, input_sizes)


def clamp_boxes(boxes: Tensor, input_sizes: Tensor) -> Tensor:
    """Clamp xyxy boxes into each image's valid area and keep x0 <= x1, y0 <= y1."""
    hw = input_sizes.to(boxes.device, boxes.dtype)
    x_max, y_max = hw[:, 1:2] - 1, hw[:, 0:1] - 1
    x = boxes[:, 0::2].clamp(min=0.0)
    y = boxes[:, 1::2].clamp(min=0.0)
    x = torch.minimum(x, x_max)
    y = torch.minimum(y, y_max)
    x = torch.sort(x, dim=1).values
    y = torch.sort(y, dim=1).values
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def sample_points(
    targets: Tensor,
    boxes: Tensor | None,
    n_pos: int,
    n_neg: int,
    img_size: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Positive clicks inside and negative clicks outside each mask (model frame).

    ``targets`` (B, g, g) are area fractions on a grid that divides ``img_size``; positives are
    drawn from cells at least half inside, negatives from cells fully outside, within ``boxes``
    (B, 4) when given (the confusable surroundings) else anywhere with image content. A point
    lies at its cell's centre. Prompts without a candidate get label -1 (SAM's padding point).

    Returns
    -------
    points (B, n_pos + n_neg, 2) xy and labels (B, n_pos + n_neg) as float tensors.
    """
    b, g, _ = targets.shape
    cell = img_size / g
    device = targets.device
    flat = targets.reshape(b, -1).float()
    centres = (torch.arange(g, device=device, dtype=torch.float32) + 0.5) * cell - 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    coords = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    pos_w = (flat >= 0.5).float()
    neg_w = (flat == 0).float()
    if boxes is not None:
        inside = (
            (coords[None, :, 0] >= boxes[:, None, 0])
            & (coords[None, :, 0] <= boxes[:, None, 2])
            & (coords[None, :, 1] >= boxes[:, None, 1])
            & (coords[None, :, 1] <= boxes[:, None, 3])
        ).float()
        in_box = neg_w * inside
        has_in_box = in_box.sum(dim=1, keepdim=True) > 0
        neg_w = torch.where(has_in_box, in_box, neg_w)
    points, labels = [], []
    for weights, count, label in ((pos_w, n_pos, 1.0), (neg_w, n_neg, 0.0)):
        if count == 0:
            continue
        available = weights.sum(dim=1) > 0
        safe = torch.where(available[:, None], weights, torch.ones_like(weights))
        idx = torch.multinomial(safe, count, replacement=True, generator=generator)
        points.append(coords[idx])
        lab = torch.full((b, count), label, device=device)
        labels.append(torch.where(available[:, None], lab, torch.full_like(lab, -1.0)))
    if not points:
        return torch.zeros((b, 0, 2), device=device), torch.zeros((b, 0), device=device)
    return torch.cat(points, dim=1), torch.cat(labels, dim=1)


def simulate_prompts(
    config: PromptConfig,
    tight_boxes: Tensor,
    targets: Tensor,
    input_sizes: Tensor,
    img_size: int,
    generator: torch.Generator | None = None,
    train: bool = True,
) -> dict[str, Tensor | None]:
    """Boxes and points for a batch, as keyword arguments of :meth:`SamModel.forward`.

    With ``train=False`` boxes are the tight boxes (evaluation is deterministic) and points are
    drawn from ``generator`` (seed it for reproducible evaluation).
    """
    boxes = None
    if config.box:
        mode = config.jitter if train else "none"
        boxes = jitter_boxes(
            tight_boxes, input_sizes, mode, config.jitter_px, config.jitter_ratio, img_size,
            generator,
        )  # fmt: skip
    points = labels = None
    if config.n_points:
        points, labels = sample_points(
            targets, boxes, config.positive_points, config.negative_points, img_size, generator
        )
    return {"boxes": boxes, "points": points, "point_labels": labels}


def box3d_from_mask(mask: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """(z0, z1, xyxy) of a (Z, H, W) mask: first and last slice holding it and its 2-D extent."""
    zs = np.flatnonzero(np.any(mask, axis=(1, 2)))
    if zs.size == 0:
        return None
    rows = np.flatnonzero(np.any(mask, axis=(0, 2)))
    cols = np.flatnonzero(np.any(mask, axis=(0, 1)))
    return int(zs[0]), int(zs[-1]), np.array([cols[0], rows[0], cols[-1], rows[-1]], float)
