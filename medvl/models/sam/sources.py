"""Images the SAM embedding cache can key and load: files (keyed by their bytes) or arrays.

Keys are content hashes, so a renamed or copied file is still a hit and a changed file never
is. Hashing every DICOM each run would cost about as much as decoding it, so
:class:`FileHashMemo` remembers each file's SHA-256 by (absolute path, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from medvl.io.durable import read_jsonl
from medvl.models.hub import sha256_file


def array_content_hash(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{a.dtype.str}:{a.shape}".encode())
    digest.update(a.tobytes())
    return digest.hexdigest()


class FileHashMemo:
    """SHA-256 of files, remembered by (absolute path, size, mtime_ns) in a JSONL beside the cache.

    Hashing every DICOM each run would cost about as much as decoding it; a file whose size and
    modification time are unchanged keeps its hash.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._memo: dict[tuple[str, int, int], str] = {}
        for row in read_jsonl(self.path) if self.path.is_file() else []:  # torn line dropped
            self._memo[(row["path"], row["size"], row["mtime_ns"])] = row["sha256"]
        self._new: list[str] = []

    def sha256(self, path: str | Path) -> str:
        """Content hash of ``path``, from the memo when the file is unchanged."""
        p = Path(path).resolve()
        stat = p.stat()
        key = (str(p), stat.st_size, stat.st_mtime_ns)
        if key not in self._memo:
            self._memo[key] = sha256_file(p)
            self._new.append(
                json.dumps(
                    dict(
                        zip(("path", "size", "mtime_ns"), key, strict=True), sha256=self._memo[key]
                    )
                )
            )
        return self._memo[key]

    def save(self) -> None:
        """Append the hashes computed since the last save."""
        if self._new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write("\n".join(self._new) + "\n")
            self._new.clear()


class ImageSource(Protocol):
    """Images the cache can key and load: gray (H, W) float32 in [0, 1]."""

    reader_id: str

    def __len__(self) -> int: ...

    def content_key(self, index: int) -> str: ...

    def load(self, index: int) -> np.ndarray: ...


class FileImageSource:
    """Image files read by ``reader(path) -> (H, W) [0, 1]``; keyed by their bytes' SHA-256.

    ``reader`` must be picklable (a module-level function or ``functools.partial``) for loader
    workers; ``reader_id`` names its settings (window, frame) and enters the cache namespace.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        reader: Callable[[str], np.ndarray],
        reader_id: str,
        hash_memo: FileHashMemo | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.reader = reader
        self.reader_id = reader_id
        self.hash_memo = hash_memo

    def __len__(self) -> int:
        return len(self.paths)

    def content_key(self, index: int) -> str:
        path = self.paths[index]
        return self.hash_memo.sha256(path) if self.hash_memo else sha256_file(path)

    def load(self, index: int) -> np.ndarray:
        return self.reader(self.paths[index])


class ArrayImageSource:
    """In-memory gray images (e.g. the slices of a volume), keyed by their bytes."""

    reader_id = "array"

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self.arrays = list(arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def content_key(self, index: int) -> str:
        return array_content_hash(np.asarray(self.arrays[index], dtype=np.float32))

    def load(self, index: int) -> np.ndarray:
        return np.asarray(self.arrays[index], dtype=np.float32)
