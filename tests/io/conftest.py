"""DICOM fixtures built with pydicom inside the tests (no binary blobs in git).

Every file carries planted PHI so tests can assert that no error message or metadata leaks it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

PLANTED_PHI = {
    "PatientName": "Plantedname^Secretperson",
    "PatientID": "PHI-ID-7342119",
    "PatientBirthDate": "19450317",
    "AccessionNumber": "ACC99887766",
}


def make_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    modality: str = "DX",
    sop_class: str = DigitalXRayImageStorageForPresentation,
    **attributes: object,
) -> Dataset:
    """A minimal valid image dataset around ``pixels`` (shape (H, W), (F, H, W) or (..., 3))."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    for keyword, value in PLANTED_PHI.items():
        setattr(ds, keyword, value)
    bits = bits_stored or pixels.dtype.itemsize * 8
    ds.set_pixel_data(pixels, photometric, bits, generate_instance_uid=False)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def write_dataset(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file with preamble and file meta."""
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dicom_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``dicom_file(pixels, name="x.dcm", **make_dataset_kwargs) -> Path``."""
    counter = iter(range(10**6))

    def build(pixels: np.ndarray, name: str | None = None, **kwargs: object) -> Path:
        ds = make_dataset(pixels, **kwargs)
        return write_dataset(ds, tmp_path / (name or f"image_{next(counter)}.dcm"))

    return build


def ct_slice(
    hu: np.ndarray,
    position: tuple[float, float, float],
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    spacing: tuple[float, float] = (0.7, 0.8),
    instance: int = 1,
) -> Dataset:
    """One CT slice storing ``hu`` as int16 with intercept -1024 (stored = HU + 1024)."""
    stored = (hu + 1024).astype(np.uint16)
    ds = make_dataset(
        stored,
        bits_stored=12,
        modality="CT",
        sop_class=CTImageStorage,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        RescaleType="HU",
        SeriesInstanceUID=series_uid,
        ImagePositionPatient=list(position),
        ImageOrientationPatient=list(orientation),
        PixelSpacing=list(spacing),
        SliceThickness=2.5,
        InstanceNumber=instance,
        WindowCenter=40,
        WindowWidth=400,
    )
    return ds


@pytest.fixture
def planted_phi() -> dict[str, str]:
    """The PHI values every fixture file carries."""
    return dict(PLANTED_PHI)


@pytest.fixture
def build_dataset() -> Callable[..., Dataset]:
    """The :func:`make_dataset` builder, for tests that edit a dataset before writing it."""
    return make_dataset


@pytest.fixture
def save_dataset() -> Callable[[Dataset, Path], Path]:
    """The :func:`write_dataset` writer."""
    return write_dataset


@pytest.fixture
def build_ct_slice() -> Callable[..., Dataset]:
    """The :func:`ct_slice` builder for series tests."""
    return ct_slice
