"""Where an ingest keeps what it learns about each file until the manifests are written: on disk.

An ingest of a million files must not hold a million records in memory. :class:`OutcomeStore`
is one SQLite file in a temporary folder inside the output folder, removed when the ingest
ends (also on error), that holds

* the files to read, in walk order, and every real path met (so each file is read once);
* each file's outcome as the workers hand it back, in any order, as its finished manifest line;
* the files that the DICOMDIRs of the last pass reference;
* while the manifests are written, the first file of each SOPInstanceUID and each content hash.

Paths are stored as UTF-8 bytes (``surrogatepass``, so names that are not valid UTF-8 survive),
which makes SQLite's byte order Python's string order: ``ORDER BY path`` is the manifest order,
read from the table's own key without a sort. SQLite's page cache has a fixed size, so memory
stays flat as the corpus grows. A full disk raises SQLite's ``SQLITE_FULL`` error, which
:func:`medvl.io.durable.is_disk_full` recognises.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from medvl.data.file_walk import Outcome
from medvl.data.records import Failure, ImageRecord, manifest_line

__all__ = ["OutcomeRow", "OutcomeStore"]

OutcomeRow = tuple[bytes, str, str, str | None, str | None]
"""A stored outcome: path key, kind, manifest line (JSON references for a DICOMDIR), image_id
and content_hash (images only)."""

CACHE_KIB = 4 * 1024  # SQLite's page cache: the store's whole memory, whatever the corpus
SCHEMA = f"""
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -{CACHE_KIB};
CREATE TABLE met (real BLOB PRIMARY KEY, readable INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE queue (seq INTEGER PRIMARY KEY, path BLOB NOT NULL);
CREATE TABLE outcome (
    path BLOB PRIMARY KEY, kind TEXT NOT NULL, line TEXT NOT NULL,
    image_id TEXT, content_hash TEXT
) WITHOUT ROWID;
CREATE TABLE reference (path BLOB NOT NULL);
CREATE TABLE kept (image_id TEXT PRIMARY KEY, content_hash TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE content (content_hash TEXT PRIMARY KEY) WITHOUT ROWID;
"""


def _key(path: str) -> bytes:
    return path.encode("utf-8", "surrogatepass")


def _path(key: bytes) -> str:
    return key.decode("utf-8", "surrogatepass")


class OutcomeStore:
    """An ingest's files to read, their outcomes and its de-duplication index, on disk.

    Parameters
    ----------
    parent
        Folder (created if needed) that receives this store's own temporary folder; the caller
        keeps the walk out of it.
    """

    def __init__(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="store-", dir=parent))
        self._db = sqlite3.connect(self.folder / "outcomes.sqlite", isolation_level=None)
        self._db.executescript(SCHEMA)
        self._db.execute("BEGIN")  # one transaction: the store is scratch, never read after
        self.queued = 0
        self.outcomes = 0

    def __enter__(self) -> OutcomeStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._db.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- the real paths met (file_walk.PathsMet) ----------------------------------------------
    def claim(self, real: str) -> bool:
        """Mark ``real`` as read; ``False`` when a file with this real path is already read."""
        cursor = self._db.execute(
            "INSERT INTO met VALUES (?, 1) ON CONFLICT (real) DO UPDATE SET readable = 1 "
            "WHERE readable = 0",
            (_key(real),),
        )
        return cursor.rowcount > 0

    def note(self, real: str) -> None:
        """Remember ``real`` (an entry that is not read) without claiming it."""
        self._db.execute("INSERT OR IGNORE INTO met VALUES (?, 0)", (_key(real),))

    def met(self, real: str) -> bool:
        """Whether ``real`` was claimed or noted before."""
        found = self._db.execute("SELECT 1 FROM met WHERE real = ?", (_key(real),)).fetchone()
        return found is not None

    # -- files to read ------------------------------------------------------------------------
    def queue(self, path: str) -> None:
        """Add ``path`` to the files to read; it gets number ``queued`` (from 1)."""
        self._db.execute("INSERT INTO queue (path) VALUES (?)", (_key(path),))
        self.queued += 1

    def chunks(
        self, after: int, upto: int, size: int, rank: int = 0, ranks: int = 1
    ) -> Iterator[list[str]]:
        """Queued paths ``after < number <= upto`` in chunks of ``size``, in queue order.

        With ``ranks > 1`` only this rank's share: every ``ranks``-th path from ``rank``.
        """
        last = after
        while True:
            rows = self._db.execute(
                "SELECT seq, path FROM queue WHERE seq > ? AND seq <= ? AND (seq - ?) % ? = ? "
                "ORDER BY seq LIMIT ?",
                (last, upto, after + 1, ranks, rank, size),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [_path(key) for _, key in rows]

    # -- outcomes -----------------------------------------------------------------------------
    def add(self, outcomes: Iterable[tuple[str, Outcome]]) -> None:
        """Store each ``(path, outcome)``; a DICOMDIR's references wait in :meth:`references`."""
        self.add_rows(_row(path, outcome) for path, outcome in outcomes)

    def add_rows(self, rows: Iterable[OutcomeRow]) -> None:
        """Store rows as :meth:`rows` gives them (another rank's outcomes)."""
        for row in rows:
            self._db.execute("INSERT INTO outcome VALUES (?, ?, ?, ?, ?)", row)
            self.outcomes += 1
            if row[1] == "dicomdir":
                refs = ((_key(ref),) for ref in json.loads(row[2]))
                self._db.executemany("INSERT INTO reference VALUES (?)", refs)

    def rows(self) -> Iterator[OutcomeRow]:
        """Every stored outcome, in no particular order (close the iterator if not exhausted)."""
        cursor = self._db.execute("SELECT * FROM outcome")
        try:
            yield from cursor
        finally:
            cursor.close()

    def references(self) -> Iterator[str]:
        """The files referenced by DICOMDIRs stored since the last call (then forgotten)."""
        for (key,) in self._db.execute("SELECT path FROM reference ORDER BY rowid"):
            yield _path(key)
        self._db.execute("DELETE FROM reference")

    def in_path_order(self) -> Iterator[tuple[str, str, str, str | None, str | None]]:
        """Every outcome as ``(path, kind, line, image_id, content_hash)``, sorted by path."""
        for key, *rest in self._db.execute("SELECT * FROM outcome ORDER BY path"):
            yield (_path(key), *rest)

    # -- de-duplication, in path order --------------------------------------------------------
    def first_content(self, image_id: str, content_hash: str) -> str | None:
        """``None`` for the first image with ``image_id``; else the first one's content hash."""
        row = (image_id, content_hash)
        cursor = self._db.execute("INSERT OR IGNORE INTO kept VALUES (?, ?)", row)
        if cursor.rowcount:
            return None
        return self._db.execute(
            "SELECT content_hash FROM kept WHERE image_id = ?", (image_id,)
        ).fetchone()[0]

    def repeats_content(self, content_hash: str) -> bool:
        """Whether a kept image before this one has ``content_hash``; remembers it."""
        cursor = self._db.execute("INSERT OR IGNORE INTO content VALUES (?)", (content_hash,))
        return cursor.rowcount == 0


def _row(path: str, outcome: Outcome) -> OutcomeRow:
    kind, payload = outcome
    if kind == "image":
        record = ImageRecord(**payload)
        return (_key(path), kind, manifest_line(record), record.image_id, record.content_hash)
    if kind == "dicomdir":
        return (_key(path), kind, json.dumps(payload), None, None)
    return (_key(path), kind, manifest_line(Failure(path=path, reason=payload)), None, None)
