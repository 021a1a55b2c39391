"""Radiograph fixtures for the data-layer tests, built with pydicom (no binary blobs in git).

Every file carries a planted PatientID so tests can assert that manifests never hold it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

PLANTED_PATIENT_IDS = ("MRN-SECRET-0001", "MRN-SECRET-0002", "MRN-SECRET-0003")


def xray_dataset(
    pixels: np.ndarray,
    *,
    patient_id: str = PLANTED_PATIENT_IDS[0],
    study_uid: str | None = None,
    view: str = "PA",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    spacing: tuple[float, float] | None = (0.2, 0.2),
) -> Dataset:
    """A small DX image dataset with the attributes a DICOMDIR record needs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientID = patient_id
    ds.PatientName = "Planted^Person"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20200101", "120000", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ViewPosition = view
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    return ds


def xray_pixels(seed: int, shape: tuple[int, int] = (48, 40), bits: int = 12) -> np.ndarray:
    """A smooth gradient plus noise, so every seed gives different bytes."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = (rows / shape[0] + cols / shape[1]) / 2 * (2**bits - 1) * 0.8
    noise = rng.integers(0, 2 ** (bits - 4), size=shape)
    return (base + noise).astype(np.uint16)


def save(ds: Dataset, path: Path, *, preamble: bool = True) -> Path:
    """Write ``ds`` to ``path`` (parents created); without preamble it is a bare dataset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path, enforce_file_format=True)
    else:
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


@pytest.fixture
def xray_tools() -> SimpleNamespace:
    """The builders above for tests that need them directly (test modules import no conftest)."""
    return SimpleNamespace(
        dataset=xray_dataset, pixels=xray_pixels, save=save, patient_ids=PLANTED_PATIENT_IDS
    )


@pytest.fixture
def write_xray(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``write_xray(relative_path, seed=0, shape=(48, 40), **xray_dataset_kwargs)``."""

    def build(
        relative: str, seed: int = 0, shape: tuple[int, int] = (48, 40), **kwargs: object
    ) -> Path:
        return save(xray_dataset(xray_pixels(seed, shape), **kwargs), tmp_path / relative)

    return build


@dataclass
class Corpus:
    """A folder with good images in odd places and exactly three bad files."""

    root: Path
    good: list[Path] = field(default_factory=list)
    bad: dict[str, Path] = field(default_factory=dict)


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    """Nested folders, names without extensions, a preamble-less file, and three bad files."""
    root = tmp_path / "corpus"
    c = Corpus(root=root)
    layout = [
        "a/b/c/IM0001",
        "a/b/c/IM0002.dcm",
        "a/odd name with spaces",
        "deep/1/2/3/4/5/x.DCM",
        "top.dcm",
    ]
    for i, rel in enumerate(layout):
        pid = PLANTED_PATIENT_IDS[i % len(PLANTED_PATIENT_IDS)]
        c.good.append(save(xray_dataset(xray_pixels(i), patient_id=pid), root / rel))
    c.good.append(save(xray_dataset(xray_pixels(99)), root / "raw" / "no_preamble", preamble=False))
    truncated = save(xray_dataset(xray_pixels(7)), root / "a" / "b" / "truncated")
    truncated.write_bytes(truncated.read_bytes()[:-1500])
    c.bad["truncated"] = truncated
    c.bad["not_dicom"] = root / "a" / "notes.txt"
    c.bad["not_dicom"].write_text("Chest film reviewed by Dr. Nobody; not an image.\n" * 20)
    c.bad["empty"] = root / "deep" / "empty_file"
    c.bad["empty"].write_bytes(b"")
    return c


@pytest.fixture(scope="session")
def iu_result():
    """The real IU corpus read once per session (shipped reports and header table)."""
    from medvl.data.sources.iu.xray import load_iu

    return load_iu()


@pytest.fixture(scope="session")
def iu_reports():
    """The parsed IU report XMLs and the read result (failures)."""
    from medvl.data.sources.iu.xray import read_iu_reports

    return read_iu_reports()
