"""Frozen-encoder embeddings computed once, stored as fp16 memory-mapped shards.

With a frozen image encoder, decoder fine-tuning spends nearly all of a MedSAM-style step in
the encoder. :func:`encode_images` runs the encoder once per distinct image (batched, no grad,
bf16 autocast on GPU) and :class:`EmbeddingCache` keeps the result:

- **Keys**: the image's content hash (SHA-256 of the file bytes, or of an array's bytes) inside a
  *namespace* that names the encoder identity (SHA-256 of its weights), the preprocessing
  (img_size, normalisation) and the reader (window, frame). A changed encoder or reader is a
  different namespace: nothing cached under the old one can be hit, so a changed encoder
  invalidates the cache by construction. :meth:`EmbeddingCache.stale_namespaces` lists the
  dead ones.
- **Layout**: ``root/<namespace id>/`` holds ``meta.json``, ``index.jsonl`` (key -> shard, row,
  original image size) and ``shard-*.npy`` files of shape (rows, *item_shape) fp16, each opened
  once with ``np.load(mmap_mode="r")``: a few large files instead of one per slice (MedSAM users
  hit "too many open files").
- **Crash safety**: a shard is written to a temporary name, fsynced and renamed before its
  index lines are appended, so the index never names a partial shard. Shard names are unique,
  so two runs may share a root.

A cache hit never runs the encoder, and never decodes the image either (the key is a hash of
the file bytes, memoised by path, size and mtime).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medvl.io.durable import read_jsonl
from medvl.models.sam.geometry import resize_for_model
from medvl.models.sam.sources import (
    ArrayImageSource,
    FileHashMemo,
    FileImageSource,
    ImageSource,
    array_content_hash,
)

__all__ = [
    "ArrayImageSource",
    "CacheRef",
    "EmbeddingCache",
    "EncodeResult",
    "FileHashMemo",
    "FileImageSource",
    "ImageSource",
    "array_content_hash",
    "encode_images",
    "open_cache",
]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
INDEX_FILE = "index.jsonl"
META_FILE = "meta.json"


@dataclass(frozen=True)
class CacheRef:
    """Where one entry lives: shard file name, row, and the original image size (H, W)."""

    shard: str
    row: int
    original_size: tuple[int, int]


class EmbeddingCache:
    """fp16 arrays of one shape, keyed by content hash, in memory-mapped shards.

    Parameters
    ----------
    root
        Cache folder; each namespace gets a sub-folder.
    namespace
        JSON-safe mapping naming what produced the arrays (encoder identity, preprocessing,
        reader). Its hash is the sub-folder name.
    item_shape
        Shape of one entry, e.g. (256, 64, 64) for vit_b embeddings.
    shard_size
        Entries per shard file (the last shard of a write may be smaller).
    """

    def __init__(
        self,
        root: str | Path,
        namespace: dict[str, Any],
        item_shape: Sequence[int],
        shard_size: int = 256,
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.root = Path(root)
        self.namespace = dict(namespace)
        self.namespace_id = namespace_id(namespace)
        self.dir = self.root / self.namespace_id
        self.item_shape = tuple(int(s) for s in item_shape)
        self.shard_size = shard_size
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_meta()
        self._index: dict[str, CacheRef] = {}
        self._maps: dict[str, np.ndarray] = {}
        self._pending: list[tuple[str, np.ndarray, tuple[int, int]]] = []
        self.refresh()

    def _check_meta(self) -> None:
        meta = {
            "version": CACHE_VERSION,
            "namespace": self.namespace,
            "item_shape": list(self.item_shape),
            "dtype": "float16",
        }
        path = self.dir / META_FILE
        if path.is_file():
            found = json.loads(path.read_text())
            if (
                found.get("item_shape") != meta["item_shape"]
                or found.get("version") != CACHE_VERSION
            ):
                raise ValueError(
                    f"{path}: cache holds items of shape {found.get('item_shape')} (version "
                    f"{found.get('version')}), expected {meta['item_shape']} (version "
                    f"{CACHE_VERSION}); delete {self.dir} to rebuild it"
                )
            return
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
        tmp.replace(path)

    def refresh(self) -> None:
        """Re-read the index (entries another process added since)."""
        path = self.dir / INDEX_FILE
        if not path.is_file():
            return
        for row in read_jsonl(path):  # a torn last line (a killed run) is dropped, with a warning
            self._index[row["key"]] = CacheRef(row["shard"], row["row"], tuple(row["size"]))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def get(self, key: str) -> CacheRef | None:
        """The entry stored under ``key``, or ``None``."""
        return self._index.get(key)

    def add(self, key: str, array: np.ndarray, original_size: tuple[int, int]) -> None:
        """Queue one entry; a shard is written every ``shard_size`` entries (and on flush)."""
        if tuple(array.shape) != self.item_shape:
            raise ValueError(f"entry shape {tuple(array.shape)} != cache shape {self.item_shape}")
        if key in self._index:
            return
        self._pending.append((key, np.asarray(array, dtype=np.float16), original_size))
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write queued entries as one shard, then append their index lines."""
        if not self._pending:
            return
        name = f"shard-{uuid.uuid4().hex[:16]}.npy"
        final = self.dir / name
        tmp = self.dir / f".{name}.tmp"
        with tmp.open("wb") as fh:
            np.save(fh, np.stack([a for _, a, _ in self._pending]))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(final)
        lines = []
        for row, (key, _, size) in enumerate(self._pending):
            ref = CacheRef(name, row, (int(size[0]), int(size[1])))
            self._index[key] = ref
            lines.append(
                json.dumps({"key": key, "shard": name, "row": row, "size": list(ref.original_size)})
            )
        with (self.dir / INDEX_FILE).open("a") as fh:
            fh.write("\n".join(lines) + "\n")
        logger.debug("cache %s: wrote %s with %d entries", self.namespace_id, name, len(lines))
        self._pending.clear()

    def _shard(self, name: str) -> np.ndarray:
        if name not in self._maps:
            self._maps[name] = np.load(self.dir / name, mmap_mode="r")
        return self._maps[name]

    def read(self, ref: CacheRef) -> np.ndarray:
        """One entry as a read-only fp16 view of its memory-mapped shard."""
        return self._shard(ref.shard)[ref.row]

    def read_many(self, refs: Sequence[CacheRef]) -> np.ndarray:
        """Entries stacked into one in-memory fp16 array (N, *item_shape)."""
        out = np.empty((len(refs), *self.item_shape), dtype=np.float16)
        for i, ref in enumerate(refs):
            out[i] = self.read(ref)
        return out

    def stale_namespaces(self) -> list[Path]:
        """Other namespaces under ``root`` (other encoders or preprocessing), never read here."""
        return sorted(
            p
            for p in self.root.iterdir()
            if p.is_dir() and p != self.dir and (p / META_FILE).is_file()
        )

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen their own maps
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state


def namespace_id(namespace: dict[str, Any]) -> str:
    """16 hex characters naming a namespace (hash of its sorted JSON)."""
    return hashlib.sha256(json.dumps(namespace, sort_keys=True).encode()).hexdigest()[:16]


class _Resized(Dataset):
    """Loader-side work: read and resize (no normalisation; that runs on the device).

    An unreadable image yields ``ok=False`` and the reason instead of raising, so one bad file
    does not end a batch job.
    """

    def __init__(
        self, source: ImageSource, indices: Sequence[int], img_size: int, preprocessing: str
    ) -> None:
        self.source, self.indices, self.img_size = source, list(indices), img_size
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            image = self.source.load(self.indices[i])
            gray, geometry = resize_for_model(image, self.img_size, self.preprocessing)
        except (ValueError, OSError) as err:
            side = self.img_size
            zero = torch.zeros(2, dtype=torch.long)
            return {"gray": torch.zeros(1, side, side), "input_size": zero + side,
                    "original_size": zero, "ok": False, "reason": str(err)}  # fmt: skip
        return {
            "gray": gray,
            "input_size": torch.tensor(geometry.input_size),
            "original_size": torch.tensor(geometry.original_size),
            "ok": True,
            "reason": "",
        }


@dataclass
class EncodeResult:
    """One ref per source image (``None`` where it could not be read) and the reasons."""

    refs: list[CacheRef | None]
    failures: dict[int, str]
    computed: int  # images run through the encoder (or resized) in this call


def cache_namespace(model: Any, source: ImageSource, kind: str = "embedding") -> dict[str, Any]:
    """What the cached arrays depend on: encoder weights, preprocessing and the reader."""
    cfg = model.config
    out = {
        "kind": kind,
        "img_size": cfg.img_size,
        "pixel_mean": list(cfg.pixel_mean),
        "pixel_std": list(cfg.pixel_std),
        "reader": source.reader_id,
        "preprocessing": cfg.preprocessing,
    }
    if kind == "embedding":
        out["encoder"] = model.encoder_identity()
    return out


def open_cache(
    model: Any,
    source: ImageSource,
    root: str | Path,
    kind: str = "embedding",
    shard_size: int = 256,
) -> EmbeddingCache:
    """The cache namespace for ``model``'s encoder (``kind="embedding"``) or resized pixels."""
    side = model.config.img_size
    if kind == "embedding":
        shape = (model.prompt_encoder.embed_dim, side // 16, side // 16)
    elif kind == "pixels":
        shape = (1, side, side)
    else:
        raise ValueError(f"kind must be 'embedding' or 'pixels', got {kind!r}")
    return EmbeddingCache(root, cache_namespace(model, source, kind), shape, shard_size)


def encode_images(
    model: Any,
    source: ImageSource,
    cache: EmbeddingCache,
    batch_size: int = 8,
    num_workers: int = 0,
    autocast: bool = True,
    progress: bool = False,
) -> EncodeResult:
    """Fill ``cache`` for every image of ``source`` not yet in it; return refs in source order.

    The encoder runs only on misses, batched, under ``torch.no_grad`` with bf16 autocast on
    CUDA (``autocast=False`` for fp32). ``cache.namespace["kind"] == "pixels"`` stores the
    resized gray input instead (for encoders that train). Unreadable images get no ref and a
    failure reason; the rest are encoded.
    """
    keys: list[str | None] = []
    failures: dict[int, str] = {}
    for i in range(len(source)):
        try:
            keys.append(source.content_key(i))
        except OSError as err:
            keys.append(None)
            failures[i] = f"cannot read the file ({type(err).__name__})"
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key is not None and key not in cache and key not in first:
            first[key] = i
    if first:
        _fill(model, source, cache, first, batch_size, num_workers, autocast, progress, failures)
    refs = [
        cache.get(k) if k is not None and i not in failures else None for i, k in enumerate(keys)
    ]
    for i, key in enumerate(keys):  # duplicates of an image that failed
        if key is not None and refs[i] is None and i not in failures:
            failures[i] = failures.get(first.get(key, -1), "image could not be read")
    return EncodeResult(refs, failures, len(first))


def _fill(
    model: Any,
    source: ImageSource,
    cache: EmbeddingCache,
    first: dict[str, int],
    batch_size: int,
    num_workers: int,
    autocast: bool,
    progress: bool,
    failures: dict[int, str],
) -> None:
    kind = cache.namespace.get("kind", "embedding")
    logger.info("%s cache: computing %d images", kind, len(first))
    keys = list(first)
    loader = DataLoader(
        _Resized(source, list(first.values()), model.config.img_size, model.config.preprocessing),
        batch_size=batch_size,
        num_workers=num_workers,
        # The loader's base-seed draw comes from its own generator: filling the cache must not
        # move the global stream, or training would differ with the cache's state.
        generator=torch.Generator().manual_seed(0),
    )
    device = next(model.parameters()).device
    use_bf16 = autocast and device.type == "cuda"
    from tqdm.auto import tqdm

    position = 0
    for batch in tqdm(loader, disable=not progress, desc=f"{kind} cache"):
        ok = batch["ok"]
        batch_keys = keys[position : position + len(ok)]
        position += len(ok)
        for key, good, reason in zip(batch_keys, ok.tolist(), batch["reason"], strict=True):
            if not good:
                failures[first[key]] = reason
        if not ok.any():
            continue
        gray, sizes = batch["gray"][ok], batch["input_size"][ok]
        if kind == "pixels":
            arrays = gray.numpy()
        else:
            pixels = model.normalize(gray.to(device, non_blocking=True), sizes)
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=use_bf16):
                arrays = model.encode(pixels).float().cpu().numpy()
        good_keys = [k for k, g in zip(batch_keys, ok.tolist(), strict=True) if g]
        originals = batch["original_size"][ok].tolist()
        for key, array, size in zip(good_keys, arrays, originals, strict=True):
            cache.add(key, array, (size[0], size[1]))
    cache.flush()
