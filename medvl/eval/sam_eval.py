"""Evaluation of a SAM decoder on prepared samples: masks in original geometry, metrics, overlays.

Prompts are deterministic: the tight ground-truth box (no jitter) and, when the job trains with
points, points drawn from a generator seeded per evaluation, so two evaluations of one model
give identical numbers. Masks are mapped back to each image's own rows x columns before any
metric is computed, and distances use the image's pixel spacing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medvl.data.records import SegSample
from medvl.data.sources.mask_folder import read_mask
from medvl.eval.overlays import save_overlay
from medvl.eval.segmentation import CaseMetrics, case_metrics
from medvl.models.sam.features import PreparedSample, SamSegDataset
from medvl.models.sam.prompts import PromptConfig, simulate_prompts

logger = logging.getLogger(__name__)


def _empty_case(sample: SegSample) -> CaseMetrics:
    """An empty-ground-truth sample that no box can prompt: counted, not scored."""
    return CaseMetrics(
        structure=sample.structure, image_id=sample.image_id, dice=float("nan"),
        hd95=float("nan"), nsd=float("nan"), gt_empty=True, pred_empty=True, gt_pixels=0,
        pred_pixels=0, units="mm" if sample.pixel_spacing else "px",
    )  # fmt: skip


@torch.no_grad()
def predict_low_res(
    model: nn.Module,
    dataset: SamSegDataset,
    prompts: PromptConfig,
    encoder_frozen: bool,
    batch_size: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """Low-res logits (N, g, g) of every sample, chosen by the IoU head when multimask."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    img_size = model.config.img_size
    out = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}
        kwargs = simulate_prompts(
            prompts, batch["box"], batch["target"], batch["input_size"], img_size, generator,
            train=False,
        )  # fmt: skip
        if encoder_frozen:
            result = model(image_embeddings=batch["features"].float(), **kwargs)
        else:
            result = model(
                gray=batch["features"].float(), input_sizes=batch["input_size"], **kwargs
            )
        best = result.iou_pred.argmax(dim=1)
        rows = torch.arange(len(items), device=device)
        out.append(result.low_res_logits[rows, best].float().cpu())
    if not out:
        return torch.zeros((0, img_size // 4, img_size // 4))
    return torch.cat(out)


class GroundTruth:
    """Full-resolution ground-truth masks, read once per run and kept bit-packed."""

    def __init__(self) -> None:
        self._packed: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}

    def __call__(self, path: str) -> np.ndarray:
        if path not in self._packed:
            mask = read_mask(path) != 0
            self._packed[path] = (np.packbits(mask), mask.shape)
        packed, shape = self._packed[path]
        return np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)


def evaluate_prepared(
    model: nn.Module,
    dataset: SamSegDataset,
    prompts: PromptConfig,
    encoder_frozen: bool,
    ground_truth: GroundTruth,
    empty: Sequence[SegSample] = (),
    distances: bool = True,
    tolerance_mm: float = 2.0,
    batch_size: int = 16,
    overlay_dir: Path | None = None,
    max_overlays: int = 0,
    read_image: Callable[[str], np.ndarray] | None = None,
) -> list[CaseMetrics]:
    """Per-case metrics (Dice; with ``distances`` also HD95 and NSD) in original geometry.

    Overlays of the first ``max_overlays`` cases go to ``overlay_dir`` (needs ``read_image``).
    """
    logits = predict_low_res(model, dataset, prompts, encoder_frozen, batch_size)
    cases: list[CaseMetrics] = []
    for i, item in enumerate(dataset.samples):
        cases.append(_score(item, logits[i], ground_truth, distances, tolerance_mm))
        if overlay_dir is not None and read_image is not None and i < max_overlays:
            pred = item.geometry.logits_to_original(logits[i][None, None])[0, 0].numpy() > 0
            name = f"{item.sample.image_id}__{item.sample.structure}.png".replace("/", "_")
            gt = ground_truth(item.sample.mask_path)
            save_overlay(overlay_dir / name, read_image(item.sample.image_path), gt, pred)
    cases += [_empty_case(s) for s in empty]
    return cases


def _score(
    item: PreparedSample,
    logits: torch.Tensor,
    ground_truth: GroundTruth,
    distances: bool,
    tolerance_mm: float,
) -> CaseMetrics:
    pred = item.geometry.logits_to_original(logits[None, None])[0, 0].numpy() > 0
    gt = ground_truth(item.sample.mask_path)
    spacing = item.sample.pixel_spacing
    sample = item.sample
    if distances:
        return case_metrics(pred, gt, spacing, tolerance_mm, sample.structure, sample.image_id)
    inter, total = int((pred & gt).sum()), int(pred.sum() + gt.sum())
    return CaseMetrics(
        structure=sample.structure, image_id=sample.image_id, dice=2 * inter / max(total, 1),
        hd95=float("nan"), nsd=float("nan"), gt_empty=False, pred_empty=not pred.any(),
        gt_pixels=int(gt.sum()), pred_pixels=int(pred.sum()), units="mm" if spacing else "px",
    )  # fmt: skip
