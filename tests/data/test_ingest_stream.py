"""The streamed ingest: outcomes wait on disk, manifests are merged in path order, byte-stable.

The messy corpus mixes everything whose order or bookkeeping a streamed merge could get
wrong: a DICOMDIR whose files (reached through a linked folder) are read in a later pass yet
sort first, a byte copy and a conflicting file repeating a SOPInstanceUID, a missing DICOMDIR
entry, a dangling link, a second link, a FIFO and a file name that is not valid UTF-8.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.fileset import FileSet

from medvl.data import ingest as ingest_module
from medvl.data.ingest import FAILURES_FILE, IMAGES_FILE, SCRATCH_FOLDER, ingest_directory
from medvl.data.records import Failure, ImageRecord, read_manifest, write_manifest
from medvl.io.durable import DiskFullError


def build_messy_corpus(
    tmp_path: Path, good: list[Path], root: Path, tools: SimpleNamespace
) -> dict[str, str]:
    """Add the awkward entries to the ``corpus`` fixture's folder; return what to expect."""
    fileset = FileSet()
    for i, pid in enumerate(tools.patient_ids):
        fileset.add(tools.dataset(tools.pixels(20 + i), patient_id=pid))
    media = root / "media"
    fileset.write(media)
    referenced = sorted(str(Path(inst.path)) for inst in FileSet(media / "DICOMDIR"))
    Path(referenced[0]).unlink()  # a DICOMDIR entry whose file is gone
    linked = Path(referenced[1]).relative_to(media).parts[0]
    elsewhere = tmp_path / "a_elsewhere" / linked  # sorts before the corpus folder
    elsewhere.parent.mkdir()
    shutil.move(media / linked, elsewhere)
    (media / linked).symlink_to(elsewhere, target_is_directory=True)
    moved = str(elsewhere / Path(referenced[1]).relative_to(media / linked))

    shutil.copy(moved, root / "zz_copy")  # same bytes as a file read in the DICOMDIR pass
    conflict = tools.dataset(tools.pixels(50))
    conflict.SOPInstanceUID = tools.read(good[0]).SOPInstanceUID
    tools.save(conflict, root / "b_conflict")  # same UID as a/b/c/IM0001, other pixels
    (root / "dangling").symlink_to(root / "gone")
    (root / "link_to_top").symlink_to(root / "top.dcm")  # read; top.dcm is the second link
    os.mkfifo(root / "pipe")
    latin1 = os.fsdecode(b"caf\xe9.dcm")
    tools.save(tools.dataset(tools.pixels(60)), root / latin1)
    return {
        "missing": referenced[0],
        "moved": moved,
        "linked": str(media / linked),
        "latin1": str(root / latin1),
    }


@pytest.fixture
def messy(corpus, tmp_path, xray_tools):
    import pydicom

    tools = SimpleNamespace(**vars(xray_tools), read=pydicom.dcmread)
    expected = build_messy_corpus(tmp_path, corpus.good, corpus.root, tools)
    return corpus, expected


def test_the_messy_manifest_is_the_same_for_one_and_two_workers(messy, tmp_path):
    corpus, expected = messy
    one = ingest_directory(corpus.root, tmp_path / "one", workers=1)
    two = ingest_directory(corpus.root, tmp_path / "two", workers=2, chunk_size=2)
    for name in (IMAGES_FILE, FAILURES_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert one.summary() == two.summary()

    root = corpus.root
    records = list(one.iter_records())
    reasons = {f.path: f.reason for f in one.iter_failures()}
    assert [r.path for r in records] == sorted(r.path for r in records)
    assert records[0].path == expected["moved"]  # read in the DICOMDIR pass, sorts first
    assert expected["latin1"] in {r.path for r in records}
    assert "byte-identical copy" in reasons[str(root / "zz_copy")]
    assert "conflicting file" in reasons[str(root / "b_conflict")]
    assert "does not exist" in reasons[expected["missing"]]
    assert "second link" in reasons[str(root / "top.dcm")]
    assert "dangling" in reasons[str(root / "dangling")]
    assert "named pipe" in reasons[str(root / "pipe")]
    assert "symbolic link to a folder" in reasons[expected["linked"]]
    # 5 good (top.dcm read as link_to_top) + no preamble + latin1 + 2 DICOMDIR entries
    assert one.summary() == {
        "files_seen": 20,
        "images": 9,
        "failures": 10,
        "dicomdirs": 1,
        "duplicate_contents": 0,
        "duplicate_uids": 2,
    }
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [FAILURES_FILE, IMAGES_FILE]


def test_the_streamed_manifests_are_what_write_manifest_writes(messy, tmp_path):
    corpus, _ = messy
    out = tmp_path / "out"
    ingest_directory(corpus.root, out, workers=1)
    for name, cls in ((IMAGES_FILE, ImageRecord), (FAILURES_FILE, Failure)):
        rewritten = write_manifest(tmp_path / name, read_manifest(out / name, cls))
        assert rewritten.read_bytes() == (out / name).read_bytes()
        lines = (out / name).read_text().splitlines()
        assert [json.loads(line)["path"] for line in lines] == sorted(
            json.loads(line)["path"] for line in lines
        )


def test_a_failed_ingest_leaves_no_scratch_and_no_manifest(corpus, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("reader exploded")

    monkeypatch.setattr(ingest_module, "_inspect_chunk", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="reader exploded"):
        ingest_directory(corpus.root, out, workers=1)
    assert list(out.iterdir()) == []


def test_a_full_disk_in_the_store_is_one_clear_error(corpus, tmp_path, monkeypatch):
    import sqlite3

    from medvl.data import outcome_store

    def full(self, real):
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode = sqlite3.SQLITE_FULL
        raise error

    monkeypatch.setattr(outcome_store.OutcomeStore, "claim", full)
    out = tmp_path / "out"
    with pytest.raises(DiskFullError, match="disk full while writing the ingest's outcome store"):
        ingest_directory(corpus.root, out, workers=1)
    assert not (out / SCRATCH_FOLDER).exists()


def test_a_killed_runs_store_is_removed_by_the_next_run(corpus, tmp_path):
    out = tmp_path / "out"
    stale = out / SCRATCH_FOLDER / "store-killed"
    stale.mkdir(parents=True)
    (stale / "outcomes.sqlite").write_bytes(b"half written")
    result = ingest_directory(corpus.root, out, workers=1)
    assert result.images > 0
    assert not (out / SCRATCH_FOLDER).exists()
