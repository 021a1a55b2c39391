"""Torch datasets and collation for image-report pairs and for segmentation samples.

``PairDataset`` items are dictionaries::

    image     float32 (1, H, W) in [0, 1]
    text      the report text the text tower sees
    labels    float32 (F,), one value per finding in ``findings`` order: 1 present, 0 negated,
              -1 uncertain, NaN not mentioned (so a loss can mask NaN and decide what -1 means)
    image_id  str
    study_id  str

Images come from the tensor cache when one is given (no DICOM decoding on a hit) and from the
deterministic eval chain otherwise; ``augment`` (per sample, in the loader) or
``batch_augment`` (per batch, through :meth:`PairDataset.on_device` once the engine has
moved the batch to the training device) then runs on the tensors, so a cached epoch still gets
fresh augmentation. ``collate_pairs`` stacks a batch and tokenizes its texts when given a
Hugging Face tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medvl.data.batch_augment import BatchAugment
from medvl.data.cache import TensorCache
from medvl.data.ingest import file_sha256
from medvl.data.records import ImageRecord, ImageReportPair, Label, SegSample
from medvl.data.transforms import PipelineConfig, eval_transforms, seg_transforms
from medvl.findings import CHEXPERT_14

__all__ = ["PairCollator", "PairDataset", "SegDataset", "collate_pairs", "label_vector"]

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def label_vector(labels: dict[str, Label], findings: Sequence[str] = CHEXPERT_14) -> torch.Tensor:
    """Labels as float32 (F,) in ``findings`` order; a finding not mentioned is NaN."""
    values = []
    for name in findings:
        value = labels.get(name)
        values.append(math.nan if value is None else float(value))
    return torch.tensor(values, dtype=torch.float32)


class PairDataset(Dataset):
    """Image-report pairs as tensors for contrastive training and evaluation.

    Parameters
    ----------
    pairs
        The pairs (``medvl.data.records.study_pairs``).
    transform
        Dictionary transform run on ``{"image": path}`` when the image is not cached; default
        the eval chain of the cache's pipeline. Required when no cache is given.
    cache
        A :class:`TensorCache` of eval-chain outputs, looked up by ``content_hash``.
    augment
        Dictionary transform run on ``{"image": tensor}`` after loading (training only).
    batch_augment
        Applied by :meth:`on_device` to each stacked batch on the training device
        (training only; much faster than a per-sample ``augment``).
    as_stored
        Serve images in the cache's storage dtype (float16 halves what the loader copies and
        sends to the device, uint8 quarters it: ``round(x * 255)``); :meth:`on_device` turns
        them into float32 in [0, 1] there.
    tokenizer, max_length
        Used by :attr:`collate` to tokenize texts per batch.
    findings
        Label order of the ``labels`` vector.
    """

    def __init__(
        self,
        pairs: Sequence[ImageReportPair],
        transform: Transform | None = None,
        *,
        cache: TensorCache | None = None,
        augment: Transform | None = None,
        batch_augment: BatchAugment | None = None,
        tokenizer: Any = None,
        max_length: int = 128,
        findings: Sequence[str] = CHEXPERT_14,
        as_stored: bool = False,
    ) -> None:
        if transform is None and cache is not None and isinstance(cache.pipeline, PipelineConfig):
            transform = eval_transforms(cache.pipeline)
        if transform is None:
            raise ValueError("PairDataset needs a transform, or a cache made for a PipelineConfig")
        self.pairs = list(pairs)
        self.transform, self.cache, self.augment = transform, cache, augment
        self.batch_augment, self.as_stored = batch_augment, as_stored
        self.tokenizer, self.max_length = tokenizer, max_length
        self.findings = tuple(findings)
        self._hashes: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def _content_hash(self, record: ImageRecord) -> str:
        if record.content_hash:
            return record.content_hash
        if record.path not in self._hashes:
            self._hashes[record.path] = file_sha256(record.path)
        return self._hashes[record.path]

    def load_image(self, record: ImageRecord) -> torch.Tensor:
        """The image as (1, H, W): from the cache when it holds it, else decoded.

        float32, or with ``as_stored`` the cache's storage dtype (misses too, so batches stack).
        """
        if self.cache is not None:
            cached = self.cache.get(self._content_hash(record), as_stored=self.as_stored)
            if cached is not None:
                return torch.from_numpy(cached)
        image = self.transform({"image": record.path})["image"]
        if self.as_stored and self.cache is not None:
            return torch.from_numpy(self.cache.encode(np.asarray(image, dtype=np.float32)))
        return torch.as_tensor(image, dtype=torch.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        image = self.load_image(pair.image)
        if self.augment is not None:
            image = torch.as_tensor(self.augment({"image": image})["image"])
        return {
            "image": image,
            "text": pair.text,
            "labels": label_vector(pair.labels, self.findings),
            "image_id": pair.image.image_id,
            "study_id": pair.study_id,
        }

    @property
    def collate(self) -> PairCollator:
        """A picklable collate function with this dataset's tokenizer."""
        return PairCollator(self.tokenizer, self.max_length)

    def on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` as the model takes it: float32 images, with ``batch_augment`` applied.

        The engine's ``on_device`` hook: the loader only reads and stacks, and the conversion
        (float16 cast; uint8 divided by 255, as :meth:`TensorCache.get` does) and then the
        augmentation run where the model trains. A float32 batch without ``batch_augment`` is
        returned as it is.
        """
        images = batch["image"]
        images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        if self.batch_augment is not None:
            images = self.batch_augment(images, batch["image_id"])
        elif images is batch["image"]:
            return batch
        return {**batch, "image": images}


def collate_pairs(
    batch: Sequence[dict[str, Any]], tokenizer: Any = None, max_length: int = 128
) -> dict[str, Any]:
    """Stack a list of :class:`PairDataset` items into a batch.

    Returns ``image`` (B, 1, H, W), ``labels`` (B, F), ``text``/``image_id``/``study_id`` lists,
    and with a tokenizer also its tensors (``input_ids``, ``attention_mask``, ...), padded to
    the longest text and truncated at ``max_length`` tokens.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {
        "image": torch.stack([item["image"] for item in batch]),
        "labels": torch.stack([item["labels"] for item in batch]),
        "text": [item["text"] for item in batch],
        "image_id": [item["image_id"] for item in batch],
        "study_id": [item["study_id"] for item in batch],
    }
    if tokenizer is not None:
        encoded = tokenizer(
            out["text"],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        out.update(dict(encoded))
    return out


class PairCollator:
    """``collate_pairs`` bound to a tokenizer; picklable, so DataLoader workers can use it."""

    def __init__(self, tokenizer: Any = None, max_length: int = 128) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Collate ``batch`` with the bound tokenizer."""
        return collate_pairs(batch, self.tokenizer, self.max_length)


class SegDataset(Dataset):
    """Image + binary mask pairs at a fixed size, for SAM decoder training and evaluation.

    Items: ``image`` (1, S, S) float32 in [0, 1], ``mask`` (1, S, S) float32 in {0, 1} (same
    resize and padding as the image, nearest neighbour), ``spacing`` (2,) float32 mm per output
    pixel (row, column; NaN when neither the file nor the sample states it), ``image_id`` and
    ``structure``. Masks are PNG or ``.npy`` and must have the image's shape.
    """

    def __init__(
        self,
        samples: Sequence[SegSample],
        size: int | PipelineConfig = 256,
        *,
        augment: Transform | None = None,
        **options: Any,
    ) -> None:
        self.samples = list(samples)
        self.transform = seg_transforms(size, keep_meta=True, **options)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        data = self.transform({"image": sample.image_path, "mask": sample.mask_path})
        image = data["image"]
        spacing = _output_spacing(image, sample)
        data["image"] = image.as_tensor() if hasattr(image, "as_tensor") else image
        if self.augment is not None:
            data = self.augment(data)
        return {
            "image": torch.as_tensor(data["image"]),
            "mask": torch.as_tensor(data["mask"]),
            "spacing": spacing,
            "image_id": sample.image_id,
            "structure": sample.structure,
        }


def _output_spacing(image: Any, sample: SegSample) -> torch.Tensor:
    """mm per output pixel: the resize scale times the file's (or the sample's) spacing."""
    affine = torch.as_tensor(image.affine, dtype=torch.float64)
    scale = torch.linalg.vector_norm(affine[:2, :2], dim=0)
    if image.meta.get("pixel_spacing") is not None:
        return scale.to(torch.float32)
    if sample.pixel_spacing is not None:
        return (scale * torch.tensor(sample.pixel_spacing, dtype=torch.float64)).float()
    return torch.full((2,), math.nan, dtype=torch.float32)
