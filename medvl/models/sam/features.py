"""Segmentation samples prepared once per run for SAM decoder training and evaluation.

SAM needs its own geometry (longest side to ``img_size``, padding at bottom/right, prompts
scaled the same way), not the square resize of :class:`medvl.data.datasets.SegDataset`, so the
SAM job prepares its samples here:

- each ground-truth mask is read once, checked against its image's size (from the embedding
  cache, so no image is decoded again) and reduced to what training needs: a soft target on the
  decoder's low-res grid (uint8 area fractions) and the tight box in the model frame;
- :class:`FeatureStore` serves the per-image features of the cache: encoder embeddings (frozen
  encoder) or the resized gray input (LoRA / full training), preloaded into RAM or read from the
  memory-mapped shards;
- :class:`SamSegDataset` yields ``features``, ``target``, ``box``, ``input_size`` per sample;
  random prompts are drawn later, batched, in the training step.

Empty ground truth (a slice without the structure) has no box to prompt with; such samples are
kept apart and counted as empty-GT cases in the evaluation report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from medvl.data.records import Failure, SegSample
from medvl.data.sources.mask_folder import read_mask
from medvl.models.sam.cache import CacheRef, EmbeddingCache
from medvl.models.sam.geometry import SamGeometry, mask_box

logger = logging.getLogger(__name__)


@dataclass
class PreparedSample:
    """One (image, structure) ready for the decoder: target, box and geometry."""

    sample: SegSample
    image_index: int  # row of the image in the run's unique-image list
    target: np.ndarray  # uint8 (g, g): 255 x area fraction on the low-res grid
    box: np.ndarray  # float32 (4,) tight xyxy box in the model frame
    geometry: SamGeometry


@dataclass
class PreparedSet:
    """Prepared samples, empty-ground-truth samples and failures of one split."""

    samples: list[PreparedSample]
    empty: list[SegSample]
    failures: list[Failure]


def prepare_samples(
    samples: Sequence[SegSample],
    image_index: dict[str, int],
    refs: Sequence[CacheRef | None],
    img_size: int,
    preprocessing: str = "sam",
) -> PreparedSet:
    """Read every mask once and derive the low-res target and model-frame box.

    ``preprocessing`` is the model's (``medsam`` squashes the image to the square).

    ``image_index`` maps an image path to its row in ``refs`` (the cache entries of the run's
    unique images; ``None`` where the image could not be read).
    """
    out = PreparedSet([], [], [])
    low_res = img_size // 4
    for sample in samples:
        ref = refs[image_index[sample.image_path]]
        if ref is None:
            out.failures.append(Failure(sample.image_path, "image could not be read"))
            continue
        try:
            mask = read_mask(sample.mask_path) != 0
        except ValueError as err:
            out.failures.append(Failure(sample.mask_path, str(err)))
            continue
        if mask.shape != ref.original_size:
            out.failures.append(
                Failure(sample.mask_path, f"mask {mask.shape} != image {ref.original_size}")
            )
            continue
        box = mask_box(mask)
        if box is None:
            out.empty.append(sample)
            continue
        geometry = SamGeometry.for_shape(*mask.shape, img_size, squash=preprocessing == "medsam")
        target = geometry.mask_to_model(mask, low_res).numpy()
        out.samples.append(
            PreparedSample(
                sample=sample,
                image_index=image_index[sample.image_path],
                target=np.round(target * 255).astype(np.uint8),
                box=np.asarray(geometry.boxes_to_model(box), dtype=np.float32),
                geometry=geometry,
            )
        )
    return out


class FeatureStore:
    """Per-image features from the cache, by image row; all in RAM when they fit the budget.

    Beyond ``max_preload_gib`` the entries are read from the memory-mapped shards per item (the
    page cache then keeps the hot ones), so a large dataset never has to fit in RAM.
    """

    def __init__(
        self,
        cache: EmbeddingCache,
        refs: Sequence[CacheRef | None],
        preload: bool = True,
        max_preload_gib: float = 8.0,
    ) -> None:
        self.cache = cache
        self.refs = list(refs)
        self.preloaded: torch.Tensor | None = None
        self.rows: dict[int, int] = {}
        wanted = [i for i, r in enumerate(self.refs) if r is not None]
        need = len(wanted) * int(np.prod(cache.item_shape)) * 2 / 2**30
        if preload and need > max_preload_gib:
            logger.info("cache entries need %.1f GiB > %.1f: reading them from the memory maps",
                        need, max_preload_gib)  # fmt: skip
            preload = False
        if preload:
            self.rows = {image: row for row, image in enumerate(wanted)}
            array = cache.read_many([self.refs[i] for i in wanted])  # type: ignore[misc]
            self.preloaded = torch.from_numpy(array)
            logger.info("preloaded %d cache entries (%.1f MiB)", len(wanted), array.nbytes / 2**20)

    def __getitem__(self, image: int) -> torch.Tensor:
        if self.preloaded is not None:
            return self.preloaded[self.rows[image]]
        ref = self.refs[image]
        if ref is None:
            raise KeyError(f"image row {image} has no cache entry")
        return torch.from_numpy(np.array(self.cache.read(ref)))


class SamSegDataset(Dataset):
    """Items: ``features`` fp16, ``target`` (g, g) float, ``box`` (4,), ``input_size`` (2,)."""

    def __init__(self, samples: Sequence[PreparedSample], store: FeatureStore) -> None:
        self.samples = list(samples)
        self.store = store

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.samples[index]
        return {
            "features": self.store[item.image_index],
            "target": torch.from_numpy(item.target).float().div_(255.0),
            "box": torch.from_numpy(item.box),
            "input_size": torch.tensor(item.geometry.input_size),
            "index": torch.tensor(int(index)),
        }
