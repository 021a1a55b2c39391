"""A preprocessed-tensor cache: decode each DICOM once, read memory-mapped shards every epoch.

Layout on disk (one folder per pipeline and storage dtype, so a changed pipeline simply
misses)::

    root/<pipeline_key>/meta.json             format, pipeline description, shape and dtype
    root/<pipeline_key>/shard-<id>.npy        (n, *shape) arrays, n <= shard_size
    root/<pipeline_key>/shard-<id>.keys.json  the n content hashes, in row order

Entries are keyed by the sha256 of the file's bytes (``ImageRecord.content_hash``), so a file
that moves keeps its entry and a file that changes gets a new one. The ``pipeline_key`` is
:meth:`medvl.data.transforms.PipelineConfig.key` (window, size, resize mode, frame, interpolation
and the pipeline version), or any string for other fixed-shape tensors (SAM embeddings);
:meth:`TensorCache.for_pipeline` appends the dtype for float16 and uint8 caches
(``<key>-uint8``), so caches of one pipeline in different dtypes sit side by side and never mix.

Storage dtypes: float32 (exact), float16 (half the bytes, about 3 significant digits) and uint8
(a quarter of the bytes: ``round(x * 255)`` of images in [0, 1], read back within 1/510, the
precision of 8-bit display data such as CheXpert or MIMIC-CXR-JPG).

Images are stored many per shard, never one file per image: a million-image corpus stays at a
few thousand files and a few thousand open memory maps (one file per item is what gave MedSAM
users "too many open files"). Reads go through ``np.load(..., mmap_mode="r")``: the OS page
cache serves a cached epoch without decoding or copying whole shards.

Writes only ever add files: a shard is renamed into place, then its key list, and a shard
counts once its key list exists. So a crash leaves at most an ignored orphan, several processes
(ranks, DataLoader workers) may fill one cache without locks, and adding a shard costs the same
at the millionth image as at the first (no global index is rewritten).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.ingest import file_sha256
from medvl.data.processes import process_state, shard
from medvl.data.records import Failure, ImageRecord

__all__ = ["CACHE_FORMAT", "DTYPES", "CacheBuildResult", "TensorCache", "build_cache"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
DTYPES = ("float32", "float16", "uint8")
UINT8_SCALE = 255


class TensorCache:
    """Fixed-shape arrays keyed by content hash, in memory-mapped ``.npy`` shards.

    ``build_cache`` fills it from records; ``PairDataset(..., cache=...)`` reads it.

    Parameters
    ----------
    root
        Cache root; the entries live in ``root/<pipeline_key>/``.
    pipeline_key
        Names what produced the arrays; a different key is a different (empty) cache.
    pipeline
        Optional description stored in ``meta.json`` (a ``PipelineConfig`` or a dict); a
        ``PipelineConfig`` is also kept as ``.pipeline`` so datasets can decode misses the
        same way.
    dtype
        Storage dtype: ``"float32"`` (exact), ``"float16"`` (half the disk; reads return float32
        with about 3 significant digits) or ``"uint8"`` (a quarter; values in [0, 1] only, read
        back within 1/510). ``None`` takes the folder's dtype (float32 for a new folder); a
        dtype that differs from the folder's is refused.
    shard_size
        Arrays per shard file.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        pipeline_key: str,
        *,
        pipeline: Any = None,
        dtype: str | None = None,
        shard_size: int = 256,
    ) -> None:
        if not pipeline_key or os.sep in pipeline_key or pipeline_key.startswith("."):
            raise ValueError(f"pipeline_key must be a plain folder name, got {pipeline_key!r}")
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.root = Path(root)
        self.key = pipeline_key
        self.dir = self.root / pipeline_key
        self.pipeline = pipeline
        self.dtype = dtype or "float32"
        self._dtype_fixed = dtype is not None  # requested, or used for writing
        self.shard_size = shard_size
        self.shape: tuple[int, ...] | None = None
        self._shards: list[str] = []
        self._entries: dict[str, tuple[int, int]] = {}
        self._maps: dict[int, np.ndarray] = {}
        self.refresh()

    @classmethod
    def for_pipeline(
        cls, root: str | os.PathLike, pipeline: Any, dtype: str = "float32", **kwargs: Any
    ) -> TensorCache:
        """The ``dtype`` cache of a :class:`~medvl.data.transforms.PipelineConfig`.

        The folder is the pipeline's hash, plus ``-float16`` or ``-uint8`` for those dtypes
        (float32 folders keep the bare hash they always had).
        """
        key = pipeline.key() if dtype == "float32" else f"{pipeline.key()}-{dtype}"
        return cls(root, key, pipeline=pipeline, dtype=dtype, **kwargs)

    def _load_meta(self) -> bool:
        """Adopt dtype and shape from ``meta.json``; False when there is none yet.

        A folder whose dtype differs from the one requested (or already written) is refused.
        """
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            return False
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{meta_path}: cache format {meta.get('format')}, {CACHE_FORMAT} read")
        if self._dtype_fixed and meta["dtype"] != self.dtype:
            raise ValueError(
                f"cache {self.dir} stores {meta['dtype']}, not {self.dtype}; open it without a "
                "dtype, or use TensorCache.for_pipeline (one folder per dtype)"
            )
        self.dtype, self._dtype_fixed = meta["dtype"], True
        self.shape = tuple(meta["shape"])
        return True

    def _write_meta(self) -> None:
        pipeline = self.pipeline
        if pipeline is not None and hasattr(pipeline, "key"):
            pipeline = asdict(pipeline)
        meta = {
            "format": CACHE_FORMAT,
            "key": self.key,
            "pipeline": pipeline,
            "shape": list(self.shape or ()),
            "dtype": self.dtype,
        }
        _atomic_write(self.dir / "meta.json", json.dumps(meta, indent=2, default=list))

    def refresh(self) -> None:
        """Pick up shards written since opening (by this or another process)."""
        self._load_meta()
        known = set(self._shards)
        for keys_path in sorted(self.dir.glob("shard-*.keys.json")):
            name = keys_path.name.removesuffix(".keys.json") + ".npy"
            if name in known:
                continue
            number = len(self._shards)
            self._shards.append(name)
            for row, content_hash in enumerate(json.loads(keys_path.read_text())):
                self._entries.setdefault(content_hash, (number, row))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, content_hash: object) -> bool:
        return content_hash in self._entries

    def keys(self) -> Iterator[str]:
        """Content hashes held, in insertion order."""
        return iter(self._entries)

    def _shard(self, number: int) -> np.ndarray:
        if number not in self._maps:
            self._maps[number] = np.load(self.dir / self._shards[number], mmap_mode="r")
        return self._maps[number]

    def get(self, content_hash: str, as_stored: bool = False) -> np.ndarray | None:
        """The array for ``content_hash`` (a fresh writable copy), else ``None``.

        float32 by default (a uint8 entry divided by 255); with ``as_stored`` in the storage
        dtype (a float16 or uint8 cache then copies a half or a quarter of the bytes, and the
        training device converts: :meth:`medvl.data.datasets.PairDataset.on_device`).
        """
        where = self._entries.get(content_hash)
        if where is None:
            return None
        stored = self._shard(where[0])[where[1]]
        if as_stored:
            return np.array(stored)
        out = np.array(stored, dtype=np.float32)
        if self.dtype == "uint8":
            out /= np.float32(UINT8_SCALE)
        return out

    def encode(self, array: np.ndarray, label: str = "array") -> np.ndarray:
        """``array`` in the storage dtype, as :meth:`put_many` stores it.

        uint8 stores ``round(x * 255)`` and refuses values that do not round into 0..255 (a
        pipeline whose output leaves [0, 1], e.g. bicubic overshoot): use float16 or float32
        for those. ``label`` names the array in that error.
        """
        if self.dtype != "uint8":
            return np.asarray(array).astype(self.dtype, copy=False)
        scaled = np.rint(np.asarray(array, dtype=np.float64) * UINT8_SCALE)
        low, high = float(scaled.min()), float(scaled.max())
        if not (low >= 0 and high <= UINT8_SCALE):  # NaN fails both
            raise ValueError(
                f"cache {self.dir}: {label} has values in [{low / UINT8_SCALE:.4g}, "
                f"{high / UINT8_SCALE:.4g}]; uint8 storage holds [0, 1] only "
                "(store float16 or float32)"
            )
        return scaled.astype(np.uint8)

    def put_many(self, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store ``(content_hash, array)`` pairs, ``shard_size`` per shard; return the count added.

        Hashes already present (or repeated in ``items``) are skipped. Every array must have the
        cache's shape (fixed by the first array ever stored, recorded in ``meta.json``) and,
        for uint8, values in [0, 1] (see :meth:`encode`).
        """
        self._dtype_fixed = True  # a folder another process creates meanwhile must agree
        added, batch, keys = 0, [], []
        for content_hash, array in items:
            if content_hash in self._entries or content_hash in keys:
                continue
            array = np.asarray(array)
            if self.shape is None:
                self.shape = tuple(array.shape)
            if tuple(array.shape) != self.shape:
                raise ValueError(
                    f"cache {self.dir}: array for {content_hash[:16]} has shape "
                    f"{tuple(array.shape)}, the cache holds {self.shape}"
                )
            batch.append(self.encode(array, f"array for {content_hash[:16]}"))
            keys.append(content_hash)
            if len(batch) == self.shard_size:
                added += self._flush(keys, batch)
                batch, keys = [], []
        if batch:
            added += self._flush(keys, batch)
        return added

    def _flush(self, keys: list[str], arrays: list[np.ndarray]) -> int:
        """Write one shard and then its key list (the commit); returns the entries added."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self._load_meta():
            self._write_meta()
        elif tuple(arrays[0].shape) != self.shape:
            raise ValueError(
                f"cache {self.dir}: arrays of shape {tuple(arrays[0].shape)}, the cache holds "
                f"{self.shape}"
            )
        stem = f"shard-{uuid.uuid4().hex[:16]}"
        tmp = self.dir / f".{stem}.npy.tmp"
        with tmp.open("wb") as fh:
            np.save(fh, np.stack(arrays))
        tmp.replace(self.dir / f"{stem}.npy")
        _atomic_write(self.dir / f"{stem}.keys.json", json.dumps(keys))
        self.refresh()
        number = self._shards.index(f"{stem}.npy")
        return sum(1 for key in keys if self._entries[key][0] == number)

    def close(self) -> None:
        """Drop the open memory maps (they reopen on the next ``get``)."""
        self._maps.clear()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without open memory maps, so DataLoader workers open their own."""
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass
class CacheBuildResult:
    """What :func:`build_cache` did: entries added, records already cached (or duplicates of
    another record's bytes), and files that could not be decoded."""

    cache: TensorCache
    added: int = 0
    reused: int = 0
    failures: list[Failure] = field(default_factory=list)


class _DecodeItems:
    """Map-style dataset for the DataLoader that decodes records missing from the cache."""

    def __init__(self, records: list[ImageRecord], transform: Any, cached: set[str]) -> None:
        self.records, self.transform, self.cached = records, transform, cached

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[str, str, Any]:
        from medvl.io.dicom import DicomReadError

        record = self.records[i]
        try:
            content_hash = record.content_hash or file_sha256(record.path)
        except OSError as err:
            return ("failure", record.path, f"file cannot be read ({type(err).__name__})")
        if content_hash in self.cached:
            return ("cached", content_hash, None)
        try:
            image = self.transform({"image": record.path})["image"]
        except (DicomReadError, ValueError) as err:
            return ("failure", record.path, getattr(err, "reason", str(err)))
        return ("new", content_hash, np.asarray(image, dtype=np.float32))


def _identity(item: Any) -> Any:
    return item


def _merge_ranks(result: CacheBuildResult, todo: list[ImageRecord], state: Any) -> None:
    """After every rank stored its share: the whole cache, counts and failures on each rank
    (failures in record order, as one process lists them)."""
    from accelerate.utils import gather_object

    state.wait_for_everyone()  # every rank's shards are renamed into place
    result.cache.refresh()
    added = gather_object([result.added])
    failures = [f for share in gather_object([result.failures]) for f in share]
    order = {r.path: i for i, r in enumerate(todo)}
    result.added = sum(added)
    result.failures = sorted(failures, key=lambda f: order.get(f.path, len(order)))


def build_cache(
    records: Iterable[ImageRecord],
    root: str | os.PathLike,
    pipeline: Any = None,
    *,
    workers: int = 0,
    dtype: str = "float32",
    shard_size: int = 256,
    progress: bool = False,
) -> CacheBuildResult:
    """Run the deterministic eval chain of ``pipeline`` once per distinct image and store it.

    Parameters
    ----------
    records
        Images to cache; an empty ``content_hash`` is computed from the file.
    root
        Cache root folder.
    pipeline
        A :class:`~medvl.data.transforms.PipelineConfig` (default: ``PipelineConfig()``).
    workers
        DataLoader worker processes decoding in parallel (0 decodes here).
    dtype
        Storage dtype (``float32``, ``float16`` or ``uint8``); each dtype has its own folder
        (:meth:`TensorCache.for_pipeline`).
    shard_size
        Arrays per shard file.
    progress
        Show a tqdm bar.

    Returns
    -------
    CacheBuildResult
        Unreadable files are failures (path, reason); the rest are cached.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from medvl.data.transforms import PipelineConfig, eval_transforms

    pipeline = pipeline or PipelineConfig()
    cache = TensorCache.for_pipeline(root, pipeline, dtype=dtype, shard_size=shard_size)
    records = list(records)
    todo, queued = [], set()
    for record in records:
        if record.content_hash and (record.content_hash in cache or record.content_hash in queued):
            continue
        queued.add(record.content_hash)
        todo.append(record)
    result = CacheBuildResult(cache=cache)
    state = process_state()  # under torchrun each rank decodes every N-th missing image
    mine = shard(todo, state)
    if state.num_processes > 1:
        logger.info("rank %d/%d decodes %d of %d images", state.process_index,
                    state.num_processes, len(mine), len(todo))  # fmt: skip
    items = _DecodeItems(mine, eval_transforms(pipeline), set(cache.keys()))
    loader = DataLoader(items, batch_size=None, num_workers=workers, collate_fn=_identity)

    def decoded() -> Iterator[tuple[str, np.ndarray]]:
        for kind, key, payload in tqdm(loader, desc="cache", unit="img", disable=not progress):
            if kind == "new":
                yield key, payload
            elif kind == "failure":
                result.failures.append(Failure(path=key, reason=payload))

    result.added = cache.put_many(decoded())
    if state.num_processes > 1:
        _merge_ranks(result, todo, state)
    result.reused = len(records) - result.added - len(result.failures)
    logger.info(
        "cache %s: %d added, %d failures, %d entries in all",
        cache.dir, result.added, len(result.failures), len(cache),
    )  # fmt: skip
    return result
