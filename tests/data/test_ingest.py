"""Batch ingest: every file ends in the manifest or the failure list, once, without PHI."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from pydicom.fileset import FileSet

from medvl.data.ingest import (
    FAILURES_FILE,
    IMAGES_FILE,
    file_sha256,
    ingest_directory,
    patient_key,
)
from medvl.data.records import Failure, ImageRecord, read_manifest
from medvl.data.worker_pool import CRASH_REASON, run_chunked


def test_corpus_with_bad_files_completes(corpus, tmp_path):
    out = tmp_path / "out"
    result = ingest_directory(corpus.root, out, workers=1)

    failures = read_manifest(out / FAILURES_FILE, Failure)
    assert sorted(f.path for f in failures) == sorted(str(p) for p in corpus.bad.values())
    reasons = {Path(f.path).name: f.reason for f in failures}
    assert "empty" in reasons["empty_file"]
    assert "not a DICOM file" in reasons["notes.txt"]
    assert "PixelData" in reasons["truncated"]

    records = read_manifest(out / IMAGES_FILE, ImageRecord)
    assert sorted(r.path for r in records) == sorted(str(p) for p in corpus.good)
    assert result.summary() == {
        "files_seen": len(corpus.good) + 3,
        "images": len(corpus.good),
        "failures": 3,
        "dicomdirs": 0,
        "duplicate_contents": 0,
        "duplicate_uids": 0,
    }


def test_records_hold_safe_metadata_and_real_hashes(corpus, tmp_path, xray_tools):
    planted_ids = xray_tools.patient_ids
    result = ingest_directory(corpus.root, tmp_path / "out", workers=1, salt="s3cret")
    by_path = {r.path: r for r in result.iter_records()}
    record = by_path[str(corpus.good[0])]
    assert record.content_hash == file_sha256(corpus.good[0])
    assert (record.rows, record.columns, record.bits_stored) == (48, 40, 12)
    assert (record.modality, record.view_position, record.frames) == ("DX", "PA", 1)
    assert record.pixel_spacing == (0.2, 0.2)
    assert record.study_id == record.study_uid_hash != ""
    assert record.image_id == record.sop_uid_hash != ""
    assert record.patient_key == patient_key(planted_ids[0], "s3cret")
    assert record.patient_key != patient_key(planted_ids[0], "")
    # the same patient in two files gets the same key; different patients differ
    keys = [by_path[str(p)].patient_key for p in corpus.good[:4]]
    assert keys[0] == keys[3] and len(set(keys[:3])) == 3


def test_manifest_never_holds_patient_identifiers(corpus, tmp_path, xray_tools):
    planted_ids = xray_tools.patient_ids
    out = tmp_path / "out"
    ingest_directory(corpus.root, out, workers=1)
    text = (out / IMAGES_FILE).read_text() + (out / FAILURES_FILE).read_text()
    for planted in (*planted_ids, "Planted", "Person"):
        assert planted not in text


def test_two_workers_give_the_identical_manifest(corpus, tmp_path):
    ingest_directory(corpus.root, tmp_path / "one", workers=1)
    ingest_directory(corpus.root, tmp_path / "two", workers=2, chunk_size=2)
    for name in (IMAGES_FILE, FAILURES_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_output_folder_inside_the_corpus_is_not_ingested(corpus):
    out = corpus.root / "manifests"
    ingest_directory(corpus.root, out, workers=1)
    again = ingest_directory(corpus.root, out, workers=1)
    assert again.images == len(corpus.good)
    assert again.failures == 3


def test_dicomdir_entries_are_followed_once_and_missing_ones_recorded(tmp_path, xray_tools):
    fileset = FileSet()
    for i, pid in enumerate(xray_tools.patient_ids):
        fileset.add(xray_tools.dataset(xray_tools.pixels(i), patient_id=pid))
    root = tmp_path / "media"
    fileset.write(root)
    referenced = sorted(str(Path(inst.path)) for inst in FileSet(root / "DICOMDIR"))
    Path(referenced[0]).unlink()

    result = ingest_directory(root, tmp_path / "out", workers=1)

    assert result.dicomdirs == 1
    assert [r.path for r in result.iter_records()] == referenced[1:]
    failures = [(f.path, "DICOMDIR" in f.reason) for f in result.iter_failures()]
    assert failures == [(referenced[0], True)]
    assert result.files_seen == len(referenced) + 1


def test_decode_check_catches_pixels_the_header_cannot(tmp_path, write_xray, xray_tools):
    good = write_xray("in/good.dcm")
    bad = tmp_path / "in" / "bad.dcm"
    ds = xray_tools.dataset(xray_tools.pixels(1))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    # a valid encapsulation (empty offset table, one fragment) around bytes no codec can decode
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x04\x00\x00\x00junk"
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    xray_tools.save(ds, bad)

    header_only = ingest_directory(tmp_path / "in", tmp_path / "h", workers=1)
    decoded = ingest_directory(tmp_path / "in", tmp_path / "d", workers=1, decode_check=True)
    assert {r.path for r in header_only.iter_records()} == {str(good), str(bad)}
    assert [r.path for r in decoded.iter_records()] == [str(good)]
    (failure,) = decoded.iter_failures()
    assert failure.path == str(bad) and "could not be decoded" in failure.reason


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ingest_directory(tmp_path / "nope", tmp_path / "out")


def test_a_file_that_kills_its_worker_is_isolated(tmp_path, monkeypatch):
    helper = tmp_path / "crashy_reader.py"
    helper.write_text(
        textwrap.dedent(
            """
            import os

            def inspect_chunk(paths, tag):
                out = []
                for p in paths:
                    if "crash" in p:
                        os._exit(3)
                    out.append(("image", f"{tag}:{p}"))
                return out
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import crashy_reader

    paths = [f"file{i}" for i in range(9)] + ["crash-me"] + [f"late{i}" for i in range(5)]
    chunks = [paths[i : i + 3] for i in range(0, len(paths), 3)]
    done: dict[str, tuple] = {}

    def keep(chunk, outcomes):
        assert not done.keys() & set(chunk)  # every path handed on once
        done.update(zip(chunk, outcomes, strict=True))

    run_chunked(crashy_reader.inspect_chunk, chunks, ("t",), keep, workers=2)
    assert set(done) == set(paths)
    assert done["crash-me"] == ("failure", CRASH_REASON)
    assert all(done[p] == ("image", f"t:{p}") for p in paths if p != "crash-me")
    sys.modules.pop("crashy_reader", None)


def test_failures_file_is_valid_jsonl(corpus, tmp_path):
    ingest_directory(corpus.root, tmp_path / "out", workers=1)
    lines = (tmp_path / "out" / FAILURES_FILE).read_text().splitlines()
    assert [sorted(json.loads(line)) for line in lines] == [["path", "reason"]] * 3
