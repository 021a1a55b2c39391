"""The ingest zoo: links, pipes, devices, duplicates, cut headers and absurd sizes.

Every path below the root ends in exactly one of ``images.jsonl`` or ``failures.jsonl``, and
each failure says what the entry is.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, generate_uid

from medvl.data.ingest import ingest_directory
from medvl.io.dicom import DicomReadError, read_dicom


def absurd_rle(path: Path) -> Path:
    """An 8 KB RLE file whose header claims a 30000 x 30000 16-bit image (1.8 GB decoded)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "OT", 30000, 30000
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    header = (2).to_bytes(4, "little") + (64).to_bytes(4, "little") + bytes(56)
    ds.PixelData = encapsulate([header + bytes(8000)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def zoo(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "zoo"
    root.mkdir()
    good = root / "good.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), good)
    entries = {"good": good}
    entries["copy"] = root / "z_copy_same_uid.dcm"
    shutil.copy(good, entries["copy"])
    changed = pydicom.dcmread(good)
    changed.InstanceNumber = 99  # other bytes, same SOPInstanceUID
    entries["conflict"] = root / "z_conflict_same_uid.dcm"
    changed.save_as(entries["conflict"])
    entries["dangling"] = root / "dangling.dcm"
    entries["dangling"].symlink_to(root / "gone.dcm")
    entries["second link"] = root / "link_to_good.dcm"
    entries["second link"].symlink_to(good)
    (tmp_path / "elsewhere").mkdir()
    entries["folder link"] = root / "linked_folder"
    entries["folder link"].symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    entries["fifo"] = root / "pipe.dcm"
    os.mkfifo(entries["fifo"])
    cut = good.read_bytes()
    entries["cut in element"] = root / "cut_in_element.dcm"
    entries["cut in element"].write_bytes(cut[:1001])
    entries["cut at boundary"] = root / "cut_at_boundary.dcm"
    entries["cut at boundary"].write_bytes(cut[:700])
    entries["absurd rle"] = absurd_rle(root / "absurd_rle.dcm")
    try:
        os.mknod(root / "device.dcm", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        entries["device"] = root / "device.dcm"
    except (PermissionError, OSError):
        pass  # not root: the device case is left out
    return root, entries


EXPECTED = {
    "copy": "duplicate SOPInstanceUID: image_id",
    "conflict": "different bytes (a conflicting file)",
    "dangling": "dangling link",
    "second link": "a second link to a file this ingest already reads",
    "folder link": "symbolic link to a folder; linked folders are not followed",
    "fifo": "a named pipe (FIFO), not a regular file; not opened",
    "device": "a device file, not a regular file; not opened",
    "cut in element": "file is truncated: it ends inside the header",
    "cut at boundary": "the file is truncated before the pixel data",
    "absurd rle": "more than the 100,000,000 limit (absurd dimensions); refused before decoding",
}


@pytest.mark.parametrize("decode_check", [False, True])
def test_every_path_ends_in_exactly_one_of_manifest_or_failures(zoo, tmp_path, decode_check):
    root, entries = zoo
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("ingest blocked (opened the FIFO?)"))
    signal.alarm(60)
    try:
        result = ingest_directory(root, tmp_path / "out", workers=1, decode_check=decode_check)
    finally:
        signal.alarm(0)
    kept = {r.path for r in result.iter_records()}
    failed = {f.path: f.reason for f in result.iter_failures()}
    every = {os.path.abspath(p) for p in root.iterdir()}
    assert kept | set(failed) == every and not kept & set(failed)
    assert result.images + result.failures == len(every)
    assert kept == {str(entries["good"])}
    for name, path in entries.items():
        if name in EXPECTED:
            assert EXPECTED[name] in failed[os.path.abspath(path)], name
    assert result.summary()["duplicate_uids"] == 2


def test_the_absurd_rle_is_refused_from_the_header_without_allocating(zoo):
    _, entries = zoo
    tracemalloc.start()
    try:
        with pytest.raises(DicomReadError, match="refused before decoding"):
            read_dicom(entries["absurd rle"], decode=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024**2  # a few MB of parsing, not the 1.8 GB a decode would take


def test_unreadable_file_is_a_failure_saying_so(zoo, tmp_path, monkeypatch):
    root, entries = zoo
    real_read = pydicom.dcmread
    secret = str(entries["good"])

    def refusing(path, *args, **kwargs):
        if str(path) == secret:
            raise PermissionError(13, "Permission denied", secret)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr("medvl.io.dicom_header.pydicom.dcmread", refusing)
    result = ingest_directory(root, tmp_path / "out", workers=1)
    reasons = {f.path: f.reason for f in result.iter_failures()}
    assert reasons[secret] == "file cannot be read: permission denied"


def test_reading_a_fifo_refuses_without_opening_it(tmp_path):
    fifo = tmp_path / "scan.dcm"
    os.mkfifo(fifo)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("read_dicom opened the FIFO"))
    signal.alarm(20)
    try:
        with pytest.raises(DicomReadError, match="not a regular file .*; not opened"):
            read_dicom(fifo)
    finally:
        signal.alarm(0)
