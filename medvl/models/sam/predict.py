"""Inference with a (fine-tuned) SAM: prompts and masks in the image's own geometry.

:class:`SamSegmenter` takes gray images in [0, 1] as read (any H x W), boxes and points in
original pixel coordinates, and returns boolean masks of the original size: the resize/pad
geometry (:mod:`medvl.models.sam.geometry`) is applied and undone inside. With a multimask
model the IoU head picks each prompt's mask.

Volumes (CT/MR) are segmented slice by slice (:meth:`SamSegmenter.predict_volume`):

- ``mode="box3d"``: a 3-D box (z0, z1, xyxy) gives every slice in [z0, z1] the same 2-D box;
  slices are embedded and decoded in batches (one prompt per slice, one decoder call).
- ``mode="propagate"``: a box on one slice (MedSAM users' request): each neighbouring slice is
  prompted with the bounding box of the previous slice's mask plus a margin, walking up and down
  until the mask vanishes, a :class:`PropagationStop` rule fires, or the range ends.

A decoder answers a box with some mask, also past the organ's end (a weak model seldom returns
an empty one), so "until the mask vanishes" alone walks on to the ends of the scan.
:class:`PropagationStop` ends a walk at the first slice whose mask is implausible as the next
cross-section of the same structure: its area collapses or jumps against the previous slice's,
it shrinks below a fraction of the start slice's, the predicted IoU is low, or it overlaps the
previous slice's mask too little. That slice's mask is discarded.

Slices are reassembled into a (Z, H, W) mask; slices outside the prompted range stay empty.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from medvl.models.sam.geometry import SamGeometry, mask_box, resize_for_model
from medvl.models.sam.model import SamModel

logger = logging.getLogger(__name__)


@dataclass
class SegPrediction:
    """Masks (N, H, W) bool, predicted IoU (N,), low-res logits (N, S/4, S/4), chosen output."""

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: Tensor
    output_index: np.ndarray


UNBOUNDED_WALK_STOP = {"min_overlap": 0.6, "max_area_ratio": 1.5}
"""The rules measured on the ct-example CT for a walk that no 3-D box bounds (data card): the
growth rule ends one that runs on past the organ's end, the overlap rule one that jumps away."""


@dataclass
class PropagationStop:
    """When a propagation walk ends: each rule is off at its neutral value (0, or inf).

    Areas are pixel counts. ``min_area_ratio``: the mask is smaller than this fraction of the
    previous slice's; ``max_area_ratio``: larger than this multiple of it; ``min_start_ratio``:
    smaller than this fraction of the start slice's; ``min_score``: the predicted IoU is below
    it; ``min_overlap``: the IoU of the mask with the previous slice's mask is below it.
    """

    min_area_ratio: float = 0.0
    max_area_ratio: float = math.inf
    min_start_ratio: float = 0.0
    min_score: float = 0.0
    min_overlap: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_area_ratio", "min_start_ratio", "min_score", "min_overlap"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not self.max_area_ratio >= 1.0:
            raise ValueError(f"max_area_ratio must be >= 1, got {self.max_area_ratio}")

    def reason(
        self, mask: np.ndarray, score: float, previous: np.ndarray, start_area: int
    ) -> str | None:
        """The first rule ``mask`` (after ``previous``) breaks, or ``None`` to go on."""
        area, before = int(mask.sum()), int(previous.sum())
        if area < self.min_area_ratio * before:
            return "area_collapse"
        if area > self.max_area_ratio * before:
            return "area_growth"
        if area < self.min_start_ratio * start_area:
            return "below_start_area"
        if self.min_score and score < self.min_score:  # an untrained IoU head can go below 0
            return "low_score"
        union = int(np.logical_or(mask, previous).sum())
        if (
            self.min_overlap
            and int(np.logical_and(mask, previous).sum()) < self.min_overlap * union
        ):
            return "low_overlap"
        return None


@dataclass
class VolumePrediction:
    """A (Z, H, W) mask, the 2-D box each slice was prompted with, and where walks stopped.

    ``stops`` maps the slice where a propagation walk ended (its mask discarded) to the reason:
    ``"empty"`` or a :meth:`PropagationStop.reason`; a walk that reached its range's end has none.
    """

    mask: np.ndarray
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    stops: dict[int, str] = field(default_factory=dict)


class SamSegmenter:
    """Prompted segmentation with a :class:`SamModel` on one device."""

    def __init__(
        self,
        model: SamModel,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        autocast: bool = True,
    ) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.autocast = autocast and self.device.type == "cuda"

    @property
    def img_size(self) -> int:
        """The model's input side."""
        return self.model.config.img_size

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> tuple[Tensor, list[SamGeometry]]:
        """Image embeddings (N, C, g, g) float32 on the device, and each image's geometry."""
        out, geometries = [], []
        for start in range(0, len(images), self.batch_size):
            preprocessing = self.model.config.preprocessing
            chunk = [
                resize_for_model(im, self.img_size, preprocessing)
                for im in images[start : start + self.batch_size]
            ]
            gray = torch.stack([g for g, _ in chunk]).to(self.device)
            sizes = torch.tensor([geo.input_size for _, geo in chunk])
            pixels = self.model.normalize(gray, sizes)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
                out.append(self.model.encode(pixels).float())
            geometries += [geo for _, geo in chunk]
        return torch.cat(out), geometries

    @torch.no_grad()
    def decode(
        self,
        embeddings: Tensor,
        geometries: Sequence[SamGeometry],
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> SegPrediction:
        """One prompt per embedding (original-pixel coordinates) -> masks in each geometry.

        All images of one call must share a shape (the masks are stacked).
        """
        n = embeddings.shape[0]
        kwargs: dict[str, Tensor | None] = {"boxes": None, "points": None, "point_labels": None}
        if boxes is not None:
            b = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
            kwargs["boxes"] = torch.as_tensor(
                np.stack([g.boxes_to_model(b[i]) for i, g in enumerate(geometries)]),
                dtype=torch.float32,
            ).to(self.device)
        if points is not None:
            p = np.asarray(points, dtype=np.float64).reshape(n, -1, 2)
            kwargs["points"] = torch.as_tensor(
                np.stack([g.points_to_model(p[i]) for i, g in enumerate(geometries)]),
                dtype=torch.float32,
            ).to(self.device)
            labels = np.asarray(point_labels if point_labels is not None else np.ones(p.shape[:2]))
            kwargs["point_labels"] = torch.as_tensor(labels.reshape(n, -1), dtype=torch.float32).to(
                self.device
            )
        if kwargs["boxes"] is None and kwargs["points"] is None:
            raise ValueError("give boxes or points")
        out = self.model(image_embeddings=embeddings, **kwargs)
        best = out.iou_pred.argmax(dim=1)
        rows = torch.arange(n, device=best.device)
        logits = out.low_res_logits[rows, best]
        scores = out.iou_pred[rows, best]
        masks = [
            (geo.logits_to_original(logits[i : i + 1, None])[0, 0] > self.model.mask_threshold)
            .cpu()
            .numpy()
            for i, geo in enumerate(geometries)
        ]
        return SegPrediction(
            np.stack(masks), scores.float().cpu().numpy(), logits.float().cpu(), best.cpu().numpy()
        )

    def predict(
        self,
        image: np.ndarray,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> SegPrediction:
        """Masks (N, H, W) for N prompts on one image: boxes (N, 4) and/or points (N, K, 2).

        Points default to positive clicks unless ``point_labels`` (N, K) says otherwise.
        """
        if boxes is not None:
            n = np.asarray(boxes).reshape(-1, 4).shape[0]
        elif points is not None:
            pts = np.asarray(points)
            n = pts.reshape(-1, *pts.shape[-2:]).shape[0]
        else:
            raise ValueError("give boxes or points")
        embedding, (geometry,) = self.embed([image])
        return self.decode(
            embedding.expand(n, -1, -1, -1), [geometry] * n, boxes, points, point_labels
        )

    def predict_volume(
        self,
        volume: np.ndarray,
        box: Sequence[float],
        z_range: tuple[int, int] | None = None,
        mode: Literal["box3d", "propagate"] = "box3d",
        start_slice: int | None = None,
        margin_px: float = 5.0,
        stop: PropagationStop | None = None,
    ) -> VolumePrediction:
        """Segment a (Z, H, W) volume in [0, 1] slice by slice; see the module docstring.

        ``box`` is xyxy in slice pixels; ``z_range`` (inclusive, default all slices) bounds the
        slices; ``start_slice`` (propagate mode, default the middle of the range) holds ``box``;
        ``stop`` (propagate mode; default: only an empty mask stops) ends the walks early.
        """
        if volume.ndim != 3:
            raise ValueError(f"expected a (Z, H, W) volume, got shape {volume.shape}")
        z_count = volume.shape[0]
        z0, z1 = z_range if z_range is not None else (0, z_count - 1)
        if not 0 <= z0 <= z1 < z_count:
            raise ValueError(f"slice range {z0}..{z1} is outside the volume's {z_count} slices")
        result = VolumePrediction(np.zeros(volume.shape, dtype=bool))
        box2d = np.asarray(box, dtype=np.float64)
        if mode == "box3d":
            for start in range(z0, z1 + 1, self.batch_size):
                zs = list(range(start, min(start + self.batch_size, z1 + 1)))
                emb, geos = self.embed([volume[z] for z in zs])
                pred = self.decode(emb, geos, boxes=np.repeat(box2d[None], len(zs), axis=0))
                for i, z in enumerate(zs):
                    result.mask[z] = pred.masks[i]
                    result.boxes[z], result.scores[z] = box2d.copy(), float(pred.scores[i])
            return result
        if mode != "propagate":
            raise ValueError(f"mode must be 'box3d' or 'propagate', got {mode!r}")
        start = (z0 + z1) // 2 if start_slice is None else start_slice
        if not z0 <= start <= z1:
            raise ValueError(f"start slice {start} is outside {z0}..{z1}")
        stop = stop or PropagationStop()
        self._walk(volume, result, box2d, range(start, z1 + 1), margin_px, stop)
        seed = mask_box(result.mask[start])
        if seed is not None:
            grown = _grow(seed, margin_px, *volume.shape[1:])
            down = range(start - 1, z0 - 1, -1)
            self._walk(volume, result, grown, down, margin_px, stop, result.mask[start])
        return result

    def _walk(
        self,
        volume: np.ndarray,
        result: VolumePrediction,
        box: np.ndarray,
        zs: range,
        margin: float,
        stop: PropagationStop,
        previous: np.ndarray | None = None,
    ) -> None:
        """Prompt the slices ``zs`` in order, each with the previous mask's box plus a margin.

        Each mask is checked by ``stop`` against the one before it; ``previous`` is the start
        slice's mask when the walk begins beside it, ``None`` when ``zs`` begins at the start.
        """
        current = box
        start_area = int(previous.sum()) if previous is not None else 0
        for z in zs:
            emb, geos = self.embed([volume[z]])
            pred = self.decode(emb, geos, boxes=current[None])
            mask, score = pred.masks[0], float(pred.scores[0])
            result.boxes[z], result.scores[z] = current.copy(), score
            found = mask_box(mask)
            reason = "empty" if found is None else None
            if reason is None and previous is not None:
                reason = stop.reason(mask, score, previous, start_area)
            if reason is not None:
                logger.debug("propagation stops at slice %d: %s", z, reason)
                result.stops[z] = reason
                return
            result.mask[z] = mask
            if previous is None:
                start_area = int(mask.sum())  # the start slice: the reference for the rest
            previous = mask
            current = _grow(found, margin, *volume.shape[1:])


def _grow(box: np.ndarray, margin: float, height: int, width: int) -> np.ndarray:
    out = box + np.array([-margin, -margin, margin, margin])
    return np.clip(out, 0, [width - 1, height - 1, width - 1, height - 1])
