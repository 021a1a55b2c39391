"""Overlay PNGs for segmentation review: image | ground truth | prediction, side by side.

Each panel is the gray image; the ground truth is drawn in green and the prediction in red
(filled at low opacity, outlined at full), and the third panel shows both so misses and false
positives stand out. Pure numpy + PIL: no figure machinery, so writing hundreds is cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

GT_COLOR = (0, 200, 0)
PRED_COLOR = (230, 40, 40)
FILL_ALPHA = 0.25


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    eroded = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~eroded


def _paint(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], width: int) -> None:
    c = np.asarray(color, dtype=np.float32)
    rgb[mask] = (1 - FILL_ALPHA) * rgb[mask] + FILL_ALPHA * c
    rgb[_outline(mask, width)] = c


def overlay_panels(
    image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, line_width: int | None = None
) -> np.ndarray:
    """An (H, 3W, 3) uint8 strip: image, image + ground truth, image + prediction (+ truth outline).

    ``image`` is gray in [0, 1]; masks are boolean (H, W) or ``None``.
    """
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D gray image, got shape {image.shape}")
    for name, mask in (("ground truth", gt), ("prediction", pred)):
        if mask is not None and np.shape(mask) != image.shape:
            raise ValueError(f"{name} shape {np.shape(mask)} != image shape {image.shape}")
    width = line_width or max(1, round(max(image.shape) / 256))
    gray = np.repeat(image[..., None] * 255.0, 3, axis=2)
    panels = [gray.copy(), gray.copy(), gray.copy()]
    if gt is not None:
        gt = np.asarray(gt, dtype=bool)
        _paint(panels[1], gt, GT_COLOR, width)
        panels[2][_outline(gt, width)] = GT_COLOR
    if pred is not None:
        _paint(panels[2], np.asarray(pred, dtype=bool), PRED_COLOR, width)
    return np.concatenate(panels, axis=1).round().astype(np.uint8)


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray | None,
    max_side: int = 768,
) -> Path:
    """Write :func:`overlay_panels` as a PNG (each panel at most ``max_side`` px); return path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strip = Image.fromarray(overlay_panels(image, gt, pred))
    h = strip.height
    if h > max_side:
        strip = strip.resize(
            (round(strip.width * max_side / h), max_side), Image.Resampling.BILINEAR
        )
    strip.save(path)
    return path
