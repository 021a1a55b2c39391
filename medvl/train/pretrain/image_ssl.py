"""Self-supervised pretraining of the aligner's image tower on unlabelled images (a stage).

Before images meet reports, the image tower learns in-domain images on its own: ``method:
mae`` (masked autoencoding, for the ``vit_tiny`` ViT) or ``method: simclr`` (two augmented
views and NT-Xent, for CNNs), from :mod:`medvl.models.ssl`. The objective wraps the aligner's
own tower (shared, not copied), so only image-tower weights change; the decoder or projection
head is thrown away with the objective and the aligner saves and loads as before.

Images need no reports: those of ``data.manifest`` (any Study, pair or ingest image
manifest; studies in ``exclude_splits`` are never seen) and/or every DICOM file below
``image_folder`` (ingested into ``<stage folder>/ingest``). They go through the tensor
cache like pairs do. ``val_fraction`` of them (by a hash of the image id) is held out, and
the stage reports the held-out loss before and after, with MAE's masks drawn from a fixed seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from medvl.data.batch_augment import BatchAugment
from medvl.data.datasets import PairDataset, collate_pairs
from medvl.data.pairs import PairDataConfig, load_pairs, pair_dataset
from medvl.data.records import ImageRecord, ImageReportPair, read_manifest
from medvl.data.report_corpus import split_corpus
from medvl.models.aligner import MedVLAligner
from medvl.train.engine import EngineConfig
from medvl.train.pretrain.stages import StageConfig, finish_stage

logger = logging.getLogger(__name__)

# SimCLR's views: stronger than the contrastive stage's augmentation (the views must differ
# enough that matching them needs anatomy, not pixel identity); zoom stands in for crops.
SIMCLR_VIEWS = BatchAugment(
    prob=0.8, rotate_deg=15.0, scale=0.25, translate=0.1, brightness=0.3, contrast=(0.6, 1.6)
)


def manifest_images(data: PairDataConfig, exclude_splits: tuple[str, ...]) -> list[ImageRecord]:
    """The images of ``data.manifest`` outside ``exclude_splits`` (any manifest kind)."""
    path = Path(data.manifest or "")
    if data.phantom is None and path.is_file():
        first = next((line for line in path.open() if line.strip()), "{}")
        if "image_id" in json.loads(first):  # an ingest images.jsonl: images, no splits
            records = read_manifest(path, ImageRecord)
            return [r for r in records if not data.views or r.view_position in data.views]
    pairs = load_pairs(data, None)
    return [p.image for p in pairs if p.split not in exclude_splits]


def unlabelled_images(stage: StageConfig, work_dir: Path) -> list[ImageRecord]:
    """Every image the stage trains on, once each: the manifest's and the folder's."""
    records = manifest_images(stage.data, stage.exclude_splits) if stage.data.manifest else []
    if stage.image_folder is not None:
        from medvl.data.ingest import ingest_directory

        ingested = ingest_directory(
            stage.image_folder, work_dir / "ingest", workers=max(1, stage.data.workers)
        )
        views = stage.data.views
        records += [r for r in ingested.iter_records() if not views or r.view_position in views]
    unique = list({r.content_hash or r.path: r for r in records}.values())  # same bytes: once
    if not unique:
        raise ValueError(
            f"stage {stage.name}: no images with views {list(stage.data.views)} in "
            "data.manifest or image_folder (data.views=[] takes every view)"
        )
    return unique


class TwoViews:
    """Collate a batch into two differently augmented views (picklable for workers)."""

    def __init__(self, augment: BatchAugment) -> None:
        self.first = augment
        self.second = dataclasses.replace(augment, seed=augment.seed + 1)

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        out = collate_pairs(batch)
        ids = out["image_id"]
        return {"view_a": self.first(out["image"], ids), "view_b": self.second(out["image"], ids)}


class OneView:
    """Collate a batch of images, optionally augmented (MAE's input)."""

    def __init__(self, augment: BatchAugment | None) -> None:
        self.augment = augment

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        out = collate_pairs(batch)
        image = out["image"]
        return {"image": self.augment(image, out["image_id"]) if self.augment else image}


def ssl_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Engine loss: the objective's own (MAE on ``image``, SimCLR on ``view_a``/``view_b``)."""
    if "view_a" in batch:
        return model(batch["view_a"], batch["view_b"]), {}
    return model(batch["image"]), {}


@torch.no_grad()
def heldout_ssl_loss(objective: nn.Module, loader: DataLoader, seed: int = 0) -> float:
    """Mean loss over ``loader`` with the random draws (MAE's masks) taken from ``seed``."""
    device = next(objective.parameters()).device
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            n = next(iter(batch.values())).shape[0]
            total += float(ssl_loss(objective, batch)[0]) * n
            count += n
    return total / count


def _images_dataset(
    records: list[ImageRecord], data: PairDataConfig, size: int, work_dir: Path
) -> PairDataset:
    """Cached images as a :class:`PairDataset` with empty texts (the cache's one reader)."""
    if data.cache_dir is None and data.manifest is None:
        data = dataclasses.replace(data, cache_dir=work_dir / "tensor_cache")
    pairs = [ImageReportPair(r, r.study_id, r.patient_key, "") for r in records]
    return pair_dataset(pairs, data, size)


def run_image_ssl_stage(
    aligner: MedVLAligner, stage: StageConfig, train: EngineConfig
) -> dict[str, Any]:
    """Pretrain ``aligner``'s image tower with ``stage.method``; returns the stage's numbers."""
    from medvl.models.ssl import ssl_objective
    from medvl.train.engine import Engine

    work_dir = Path(train.output_dir or ".")
    records = unlabelled_images(stage, work_dir)
    _, val_ids = split_corpus([r.image_id for r in records], stage.val_fraction)
    held = set(val_ids)
    size = aligner.config.image.image_size
    train_set = _images_dataset([r for r in records if r.image_id not in held], stage.data,
                                size, work_dir)  # fmt: skip
    val_set = _images_dataset([r for r in records if r.image_id in held], stage.data,
                              size, work_dir) if held else None  # fmt: skip
    if stage.method == "simclr":
        collate: Any = TwoViews(dataclasses.replace(SIMCLR_VIEWS, seed=train.seed))
    else:
        collate = OneView(BatchAugment(seed=train.seed) if stage.data.augment else None)
    engine = Engine(train)  # seeds the run: the head's initialisation follows train.seed
    objective = ssl_objective(
        stage.method,
        aligner.image_tower,
        mask_ratio=stage.mask_ratio,
        temperature=stage.temperature,
    )
    aligner.to(engine.device)
    objective.to(engine.device)
    val_loader = (
        DataLoader(val_set, batch_size=train.batch_size, collate_fn=collate) if val_set else None
    )

    def evaluate(model: nn.Module) -> dict[str, float] | None:
        if val_loader is None:
            return None
        return {"ssl_loss": heldout_ssl_loss(model, val_loader, seed=train.seed)}

    objective.eval()
    before = evaluate(objective) or {}
    loader = engine.make_loader(train_set, collate_fn=collate, drop_last=True)
    logger.info(
        "image self-supervised (%s) on %d images, %d held out",
        stage.method, len(train_set), len(val_ids),
    )  # fmt: skip
    result = engine.fit(objective, loader, ssl_loss, evaluate)
    return {
        "method": stage.method,
        "images_train": len(train_set),
        "images_val": len(val_ids),
        "before": before,
        **finish_stage(result, stage, objective, lambda: evaluate(objective)),
    }
