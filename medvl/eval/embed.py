"""Embed an evaluation set of image-report pairs, recording unreadable images and going on.

Images are embedded once each (batched through a ``DataLoader``, from the tensor cache when one
is given); report texts once per study (several images of a study share its report). The
result keeps labels, ids and a few small thumbnails for plots.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from medvl.data.records import Failure, ImageReportPair, Study, read_manifest, study_pairs
from medvl.models.aligner import MedVLAligner
from medvl.models.zeroshot import embed_texts, eval_mode, model_device

logger = logging.getLogger(__name__)

Progress = Callable[[Iterable[Any]], Iterable[Any]]
THUMBNAIL_SIZE = 128


def load_eval_pairs(
    manifest: str | Path,
    split: str | None = "test",
    views: Sequence[str] | None = ("PA", "AP"),
    max_images: int | None = None,
) -> list[ImageReportPair]:
    """Image-report pairs of one split of a Study manifest (images must have a path)."""
    studies = read_manifest(manifest, Study)
    if split is not None and not any(s.split == split for s in studies):
        found = sorted({s.split or "<none>" for s in studies})
        raise ValueError(f"{manifest}: no study has split {split!r} (splits present: {found})")
    pairs = [p for p in study_pairs(studies, views=views, split=split) if p.image.path]
    if not pairs:
        raise ValueError(f"{manifest}: no image with a file path in split {split!r}, views {views}")
    return pairs[:max_images] if max_images else pairs


class _Guarded(Dataset):
    """Wrap a pair dataset so an unreadable image becomes a recorded failure, not a crash."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from medvl.io.dicom_header import DicomReadError

        try:
            return self.dataset[index]
        except (DicomReadError, OSError, ValueError, RuntimeError) as err:
            path = self.dataset.pairs[index].image.path
            reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
            return {"failure": Failure(path=path, reason=str(reason))}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    from medvl.data.datasets import collate_pairs

    good = [item for item in items if "failure" not in item]
    failures = [item["failure"] for item in items if "failure" in item]
    batch = collate_pairs(good) if good else {}
    batch["failures"] = failures
    return batch


@dataclass
class EmbeddedPairs:
    """Embeddings of an evaluation set (all tensors float32 on CPU).

    ``text_embeds`` has one row per distinct study (``text_study_ids``); ``image_embeds`` one
    row per readable image, with ``study_ids[i]`` its study.
    """

    image_embeds: Tensor
    labels: Tensor
    image_ids: list[str]
    study_ids: list[str]
    text_embeds: Tensor
    text_study_ids: list[str]
    texts: list[str]
    thumbnails: Tensor
    failures: list[Failure] = field(default_factory=list)

    def text_rows(self) -> Tensor:
        """Index into ``text_embeds`` of each image's own report."""
        where = {sid: i for i, sid in enumerate(self.text_study_ids)}
        return torch.tensor([where[s] for s in self.study_ids], dtype=torch.long)


def embed_pair_dataset(
    aligner: MedVLAligner,
    dataset: Any,
    batch_size: int = 32,
    workers: int = 0,
    keep_thumbnails: int = 8,
    progress: Progress | None = None,
) -> EmbeddedPairs:
    """Embed every readable image of a ``PairDataset`` and every distinct study report.

    Parameters
    ----------
    aligner
        The model (run in eval mode on its current device, without gradients).
    dataset
        A :class:`medvl.data.datasets.PairDataset` (items: image, text, labels, ids).
    keep_thumbnails
        How many leading images to keep, downsampled, for example plots.
    progress
        Optional wrapper around the batch iterator (e.g. ``tqdm``).
    """
    loader = DataLoader(
        _Guarded(dataset),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=model_device(aligner).type == "cuda",
    )
    device = model_device(aligner)
    image_chunks, label_chunks, thumbs = [], [], []
    image_ids: list[str] = []
    study_ids: list[str] = []
    texts: dict[str, str] = {}
    failures: list[Failure] = []
    batches: Iterable[dict[str, Any]] = progress(loader) if progress else loader
    with eval_mode(aligner):
        for batch in batches:
            failures.extend(batch["failures"])
            if "image" not in batch:
                continue
            pixels = batch["image"].to(device, non_blocking=True)
            image_chunks.append(aligner.encode_image(pixels).float().cpu())
            label_chunks.append(batch["labels"])
            image_ids.extend(batch["image_id"])
            study_ids.extend(batch["study_id"])
            for sid, text in zip(batch["study_id"], batch["text"], strict=True):
                texts.setdefault(sid, text)
            have = sum(t.shape[0] for t in thumbs)
            if have < keep_thumbnails:
                small = F.interpolate(
                    batch["image"][: keep_thumbnails - have].float(),
                    size=(THUMBNAIL_SIZE, THUMBNAIL_SIZE),
                    mode="area",
                )
                thumbs.append(small)
    for failure in failures:
        logger.warning("skipped %s", failure.reason)
    if not image_chunks:
        raise ValueError(f"none of {len(dataset)} images could be read; see the failures")
    text_study_ids = list(texts)
    text_embeds = embed_texts(aligner, [texts[s] for s in text_study_ids], batch_size)
    return EmbeddedPairs(
        image_embeds=torch.cat(image_chunks),
        labels=torch.cat(label_chunks),
        image_ids=image_ids,
        study_ids=study_ids,
        text_embeds=text_embeds.cpu(),
        text_study_ids=text_study_ids,
        texts=[texts[s] for s in text_study_ids],
        thumbnails=torch.cat(thumbs) if thumbs else torch.empty(0, 1, 1, 1),
        failures=failures,
    )
