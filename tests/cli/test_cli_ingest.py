"""``medvl ingest`` and ``medvl info`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from medvl.cli import app
from medvl.data.records import Failure, ImageRecord, read_manifest

PATIENT_ID = "MRN-CLI-SECRET-42"
runner = CliRunner()


def write_image(path: Path, seed: int = 0) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.ViewPosition = "CR", "AP"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = PATIENT_ID, "Cli^Secret", "19400101"
    ds.AccessionNumber = "ACC-CLI-777"
    pixels = np.random.default_rng(seed).integers(0, 1024, (16, 12)).astype(np.uint16)
    ds.set_pixel_data(pixels, "MONOCHROME1", 10, generate_instance_uid=False)
    ds.WindowCenter, ds.WindowWidth = 512, 1024
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    write_image(root / "x" / "one", 0)
    write_image(root / "y" / "z" / "two.dcm", 1)
    (root / "readme.md").write_text("not an image")
    return root


def test_ingest_writes_manifest_failures_and_config(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVL_SALT", "pepper")
    out = tmp_path / "out"
    result = runner.invoke(app, ["ingest", str(folder), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "images: 2" in result.output and "failures: 1" in result.output
    assert len(read_manifest(out / "images.jsonl", ImageRecord)) == 2
    assert [Path(f.path).name for f in read_manifest(out / "failures.jsonl", Failure)] == [
        "readme.md"
    ]
    assert "workers: 1" in (out / "config.yaml").read_text()
    assert "pepper" not in (out / "config.yaml").read_text()
    assert PATIENT_ID not in (out / "images.jsonl").read_text()


def test_ingest_accepts_config_overrides_and_warns_without_salt(folder, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDVL_SALT", raising=False)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["ingest", str(folder), "-o", str(out), "workers=1", "chunk_size=1"]
    )
    assert result.exit_code == 0, result.output
    assert "MEDVL_SALT is not set" in result.output
    assert "chunk_size: 1" in (out / "config.yaml").read_text()
    bad = runner.invoke(app, ["ingest", str(folder), "-o", str(out), "wrokers=3"])
    assert bad.exit_code == 2 and "wrokers" in bad.output


def test_ingest_of_a_missing_folder_fails_cleanly(tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a folder" in result.output


def test_info_prints_safe_json(folder):
    path = folder / "x" / "one"
    result = runner.invoke(app, ["info", str(path), "--decode"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["modality"], info["view_position"]) == ("CR", "AP")
    assert info["photometric"] == "MONOCHROME1"
    assert (info["rows"], info["columns"], info["bits_stored"]) == (16, 12, 10)
    assert info["inverted"] is True and info["pixel_stats"]["shape"] == [16, 12]
    assert len(info["content_hash"]) == 64
    for secret in (PATIENT_ID, "Secret", "19400101", "ACC-CLI-777"):
        assert secret not in result.output


def test_info_on_a_bad_file_names_it_and_exits_1(folder):
    result = runner.invoke(app, ["info", str(folder / "readme.md")])
    assert result.exit_code == 1
    assert "readme.md" in result.output and "not a DICOM file" in result.output
