"""Image-report pair data for the aligner jobs: manifest -> split -> cached PairDataset.

Pretraining, fine-tuning and their evaluations all read pairs the same way: a manifest of
Study records (what ``medvl ingest`` and the phantom generator write) or of ImageReportPair
records, filtered to a split and to frontal views, decoded once into the tensor cache (so
epochs do not re-read DICOM), then served by :class:`~medvl.data.datasets.PairDataset`.

With ``phantom`` set, the manifest is a phantom folder's ``studies.jsonl``, generated (or
regenerated, when the recorded settings differ) by :func:`medvl.data.phantom.ensure_phantoms`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from medvl.data.phantom import PhantomConfig
from medvl.data.records import ImageReportPair, Study, read_manifest, study_pairs
from medvl.io.reports import clean_model_text

if TYPE_CHECKING:  # the dataset module pulls in MONAI; import it only when data is built
    from medvl.data.datasets import PairDataset

logger = logging.getLogger(__name__)


@dataclass
class PairDataConfig:
    """Where the pairs come from and how images are prepared."""

    manifest: Path | None = None  # Study or ImageReportPair JSONL
    views: tuple[str, ...] = ("PA", "AP")  # empty = every view
    cache_dir: Path | None = None  # tensor cache root; default <manifest folder>/tensor_cache
    augment: bool = False  # random affine + intensity on training images
    workers: int = 0  # processes decoding images into the tensor cache
    # Tensor cache storage. float32 is exact; float16 halves disk and loader bytes; uint8
    # quarters them (round(x * 255), within 1/510: the precision of 8-bit display data such as
    # CheXpert or MIMIC-CXR-JPG). Each dtype has its own cache folder (<pipeline key>-<dtype>).
    cache_dtype: Literal["float32", "float16", "uint8"] = "float32"
    phantom: PhantomConfig | None = None  # phantoms made in the manifest's folder; None: none


def load_pairs(config: PairDataConfig, split: str | None) -> list[ImageReportPair]:
    """Pairs of ``split`` (``None`` = all) with images on disk, report text cleaned for models."""
    if config.manifest is None:
        raise ValueError("data.manifest is not set: point it at a Study or pair manifest")
    path = Path(config.manifest)
    if config.phantom is not None:  # every rank enters: the generation is behind a barrier
        from medvl.data.phantom import STUDIES_MANIFEST, ensure_phantoms

        if path.name != STUDIES_MANIFEST:
            raise ValueError(f"{path}: generated phantom manifests are named {STUDIES_MANIFEST}")
        ensure_phantoms(config.phantom, path.parent)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    first = next((line for line in path.read_text().splitlines() if line.strip()), "")
    if not first:
        raise ValueError(f"{path}: manifest is empty")
    views = tuple(config.views) or None
    if "report_text" in json.loads(first):
        pairs = study_pairs(read_manifest(path, Study), views=views, split=split)
    else:
        pairs = [
            p
            for p in read_manifest(path, ImageReportPair)
            if (split is None or p.split == split)
            and (views is None or p.image.view_position in views)
        ]
    pairs = [p for p in pairs if p.image.path]
    for pair in pairs:
        pair.text = clean_model_text(pair.text)
    if not pairs:
        raise ValueError(
            f"{path}: no {split or 'any'}-split pairs with image files (views {views})"
        )
    return pairs


def pair_dataset(
    pairs: Sequence[ImageReportPair],
    config: PairDataConfig,
    image_size: int,
    tokenizer: object = None,
    max_length: int = 128,
    train: bool = False,
) -> PairDataset:
    """A cached :class:`PairDataset` at ``image_size`` (the cache is filled on first use).

    A ``train`` set serves images as stored and must be trained with the engine's
    ``on_device=dataset.on_device`` (float32 cast and augmentation on the training device).
    """
    from medvl.data.batch_augment import BatchAugment
    from medvl.data.cache import build_cache
    from medvl.data.datasets import PairDataset
    from medvl.data.transforms import PipelineConfig

    pipeline = PipelineConfig(size=image_size)
    root = config.cache_dir or Path(config.manifest or ".").parent / "tensor_cache"
    built = build_cache(
        [p.image for p in pairs], root, pipeline, workers=config.workers, dtype=config.cache_dtype
    )
    if built.failures:
        first = built.failures[0]
        logger.warning("%d images could not be cached; first: %s", len(built.failures), first)
        bad = {f.path for f in built.failures}
        pairs = [p for p in pairs if p.image.path not in bad]
    augment = BatchAugment() if (train and config.augment) else None
    return PairDataset(
        pairs, cache=built.cache, batch_augment=augment, tokenizer=tokenizer,
        max_length=max_length, as_stored=train,
    )  # fmt: skip


def stack_images(dataset: PairDataset, batch_size: int = 64) -> dict[str, Any]:
    """All images ``(N, 1, H, W)``, labels ``(N, F)``, texts and study ids of ``dataset``.

    Evaluation sets are small next to training sets; holding them in memory lets every
    evaluation embed them in a few large batches.
    """
    import torch

    from medvl.data.datasets import collate_pairs

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_pairs)
    images, labels, texts, studies = [], [], [], []
    for batch in loader:
        images.append(batch["image"])
        labels.append(batch["labels"])
        texts += batch["text"]
        studies += batch["study_id"]
    return {
        "image": torch.cat(images),
        "labels": torch.cat(labels),
        "text": texts,
        "study_id": studies,
    }
