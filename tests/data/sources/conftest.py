"""Fixtures for the dataset-source tests: tiny DICOM / raster writers and the real IU corpus."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def write_dicom(
    path: Path,
    rows: int = 16,
    columns: int = 12,
    patient_id: str = "PAT-1",
    study_uid: str | None = None,
    sop_uid: str | None = None,
    view: str = "PA",
    photometric: str = "MONOCHROME2",
    spacing: tuple[float, float] = (0.2, 0.2),
) -> Path:
    """Write a small, valid 16-bit CR image with the given identity and geometry."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    ds.Modality = "CR"
    ds.ViewPosition = view
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    pixels = (np.arange(rows * columns, dtype=np.uint16) % 4096).reshape(rows, columns)
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_raster(path: Path, size: tuple[int, int] = (20, 24)) -> Path:
    """Write a small 8-bit gray image (JPG or PNG by suffix); ``size`` is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gradient = np.linspace(0, 255, size[0] * size[1]).reshape(size[1], size[0])
    Image.fromarray(gradient.astype(np.uint8)).save(path)
    return path


@pytest.fixture
def make_dicom() -> Callable[..., Path]:
    """The :func:`write_dicom` writer."""
    return write_dicom


@pytest.fixture
def make_raster() -> Callable[..., Path]:
    """The :func:`write_raster` writer."""
    return write_raster
