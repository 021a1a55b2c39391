"""The geometry between an image as read (DICOM rows x columns) and SAM's square input.

SAM sees every image resized so its longest side is ``img_size`` (segment-anything's
``ResizeLongestSide.get_preprocess_shape``, whose rounding we reuse) and zero-padded at the
bottom and right to ``img_size x img_size``. Prompts go forward through the same scale (x by
``new_w / W``, y by ``new_h / H``, exactly as ``ResizeLongestSide.apply_coords``); mask logits
come back by the inverse of the pipeline: upsample the low-res logits to the padded square,
crop the padding away, resize to ``(H, W)`` (upstream ``Sam.postprocess_masks``).

Two upstream traps this module avoids: ``ResizeLongestSide.apply_image`` goes through an 8-bit
PIL image (our pixels are float32 windowed values, and 8 bits would throw away 16-bit contrast),
and ``apply_image_torch`` reads the target size from ``image.shape[0], image.shape[1]`` of a
BCHW tensor (batch and channels, not height and width). :func:`resize_longest` resizes the
float image with torch instead (bilinear, antialiased).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def preprocess_shape(height: int, width: int, img_size: int) -> tuple[int, int]:
    """(new_h, new_w) with the longest side ``img_size``: upstream's own rounding."""
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide.get_preprocess_shape(height, width, img_size)


@dataclass(frozen=True)
class SamGeometry:
    """Original image size and where it sits inside SAM's padded square input."""

    original_size: tuple[int, int]  # (H, W) as read
    input_size: tuple[int, int]  # (h, w) after the longest-side resize, before padding
    img_size: int
    squash: bool = False  # MedSAM: resized to the full square, aspect ratio not kept

    @classmethod
    def for_shape(cls, height: int, width: int, img_size: int, squash: bool = False) -> SamGeometry:
        """Geometry of an ``height x width`` image for a model with ``img_size`` inputs."""
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height} x {width}")
        if squash:
            return cls((int(height), int(width)), (img_size, img_size), img_size, True)
        return cls((int(height), int(width)), preprocess_shape(height, width, img_size), img_size)

    @property
    def scale_xy(self) -> tuple[float, float]:
        """(x, y) factors from original pixels to model-input pixels."""
        (h0, w0), (h1, w1) = self.original_size, self.input_size
        return w1 / w0, h1 / h0

    def boxes_to_model(self, boxes: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """xyxy boxes (..., 4) in original pixels -> model-input pixels."""
        sx, sy = self.scale_xy
        return _scale_xy(boxes, sx, sy)

    def boxes_to_original(self, boxes: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """xyxy boxes (..., 4) in model-input pixels -> original pixels (exact inverse)."""
        sx, sy = self.scale_xy
        return _scale_xy(boxes, 1.0 / sx, 1.0 / sy)

    def points_to_model(self, points: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """xy points (..., 2) in original pixels -> model-input pixels."""
        sx, sy = self.scale_xy
        return _scale_xy(points, sx, sy)

    def points_to_original(self, points: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """xy points (..., 2) in model-input pixels -> original pixels."""
        sx, sy = self.scale_xy
        return _scale_xy(points, 1.0 / sx, 1.0 / sy)

    def logits_to_original(self, low_res: Tensor) -> Tensor:
        """Low-res logits (N, M, S/4, S/4) -> logits (N, M, H, W) in the original geometry.

        Squashed (MedSAM) geometry follows MedSAM's inference: the sigmoid probabilities are
        resized straight to (H, W) and returned as logits, so ``> 0`` is MedSAM's ``> 0.5``.
        """
        if self.squash:
            probs = F.interpolate(
                torch.sigmoid(low_res.float()), self.original_size, mode="bilinear",
                align_corners=False,
            )  # fmt: skip
            return torch.logit(probs)
        side = self.img_size
        up = F.interpolate(low_res.float(), (side, side), mode="bilinear", align_corners=False)
        h, w = self.input_size
        return F.interpolate(
            up[..., :h, :w], self.original_size, mode="bilinear", align_corners=False
        )

    def mask_to_model(self, mask: np.ndarray | Tensor, out_size: int | None = None) -> Tensor:
        """A mask (H, W) in the original geometry as the fraction inside, on SAM's padded grid.

        ``out_size`` (default ``img_size``; the decoder's low-res grid is ``img_size // 4``)
        must divide ``img_size``. The values are area fractions in [0, 1] (antialiased
        resize, then average pooling), zero in the padding: a soft target for the losses.
        """
        side = self.img_size
        out_size = out_size or side
        if side % out_size:
            raise ValueError(f"out_size {out_size} does not divide img_size {side}")
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        if tuple(m.shape) != self.original_size:
            raise ValueError(f"mask shape {tuple(m.shape)} != image shape {self.original_size}")
        m = m.float()[None, None]
        h, w = self.input_size
        resized = F.interpolate(m, (h, w), mode="bilinear", align_corners=False, antialias=True)
        padded = F.pad(resized, (0, side - w, 0, side - h))
        if out_size != side:
            padded = F.avg_pool2d(padded, side // out_size)
        return padded[0, 0].clamp_(0.0, 1.0)

    def valid_mask(self, out_size: int | None = None) -> Tensor:
        """Fraction of each cell of the ``out_size`` grid that lies inside the image."""
        ones = np.ones(self.original_size, dtype=np.float32)
        return (self.mask_to_model(ones, out_size) > 0).float()


def _scale_xy(values: np.ndarray | Tensor, sx: float, sy: float) -> np.ndarray | Tensor:
    if isinstance(values, Tensor):
        out = values.clone().to(torch.float64 if values.dtype == torch.float64 else torch.float32)
    else:
        out = np.array(values, dtype=np.float64, copy=True)
    out[..., 0::2] = out[..., 0::2] * sx
    out[..., 1::2] = out[..., 1::2] * sy
    return out


def resize_longest(pixels: np.ndarray | Tensor, img_size: int) -> tuple[Tensor, SamGeometry]:
    """Gray pixels (H, W) in [0, 1] -> (1, S, S) float32 resized and zero-padded, + geometry.

    Normalisation happens later, on the device (:meth:`SamModel.normalize`), so the cached
    and transferred form stays a single channel.
    """
    x = torch.as_tensor(np.asarray(pixels) if not isinstance(pixels, Tensor) else pixels)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D gray image, got shape {tuple(x.shape)}")
    geometry = SamGeometry.for_shape(x.shape[0], x.shape[1], img_size)
    h, w = geometry.input_size
    x = x.float()[None, None]
    if (h, w) != geometry.original_size:
        x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)
    x = F.pad(x.clamp_(0.0, 1.0), (0, img_size - w, 0, img_size - h))
    return x[0], geometry


def resize_medsam(pixels: np.ndarray | Tensor, img_size: int) -> tuple[Tensor, SamGeometry]:
    """MedSAM's own image preprocessing: gray (H, W) in [0, 1] -> (1, S, S) in [0, 1].

    As ``MedSAM_Inference.py`` does on its 8-bit image: ``skimage.transform.resize`` to
    ``S x S`` (bicubic, antialiased, range kept), cast to uint8, min-max scaled to [0, 1].
    The [0, 1] input is taken as 8-bit values / 255 (rounded back to them first).
    """
    from skimage.transform import resize

    x = np.asarray(pixels.cpu() if isinstance(pixels, Tensor) else pixels, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D gray image, got shape {x.shape}")
    geometry = SamGeometry.for_shape(x.shape[0], x.shape[1], img_size, squash=True)
    eight_bit = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    resized = resize(
        eight_bit, (img_size, img_size), order=3, preserve_range=True, anti_aliasing=True
    ).astype(np.uint8)
    scaled = (resized - resized.min()) / np.clip(resized.max() - resized.min(), 1e-8, None)
    return torch.from_numpy(scaled).float()[None], geometry


def resize_for_model(
    pixels: np.ndarray | Tensor, img_size: int, preprocessing: str = "sam"
) -> tuple[Tensor, SamGeometry]:
    """The resize of ``preprocessing`` (``sam``: :func:`resize_longest`, ``medsam``:
    :func:`resize_medsam`)."""
    if preprocessing == "medsam":
        return resize_medsam(pixels, img_size)
    return resize_longest(pixels, img_size)


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight xyxy box (x0, y0, x1, y1) of a mask's non-zero pixels, or ``None`` if empty.

    x1 / y1 are the last column / row inside (MedSAM's convention), so a one-pixel structure
    has x0 == x1.
    """
    rows = np.flatnonzero(np.any(mask, axis=1))
    cols = np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)
