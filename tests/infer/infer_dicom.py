"""Builders for inference tests: small CR radiographs with planted identifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

PLANTED_NAME = "Doe^Jane^Q"
PLANTED_ID = "MRN-90210-XYZ"


def make_cr(
    path: Path,
    *,
    study_uid: str,
    rows: int = 48,
    columns: int = 40,
    view: str = "PA",
    modality: str = "CR",
    seed: int = 0,
    bits: int = 12,
) -> Dataset:
    """Write a small MONOCHROME2 CR image with planted patient identifiers (8 or 12 bits)."""
    rng = np.random.default_rng(seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = PLANTED_NAME
    ds.PatientID = PLANTED_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC778899"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101010"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.ViewPosition = view
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "test"
    ds.PatientOrientation = ["L", "F"]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8, 8, 7) if bits == 8 else (16, 12, 11)
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.5, 0.5]
    dtype = np.uint8 if bits == 8 else np.uint16
    ds.PixelData = rng.integers(0, 2**bits, (rows, columns), dtype=dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def make_results(source: Path, out_dir: Path, findings=("Cardiomegaly", "Edema")) -> list[Path]:
    """Write a real SEG and a real Comprehensive 3D SR for ``source`` into ``out_dir``."""
    import pydicom

    from medvl.infer.export import export_study
    from medvl.infer.result import (
        FindingScore,
        ImageResult,
        ModelIdentity,
        SegmentMask,
        StudyResult,
    )
    from medvl.io.dicom import hash_uid

    ds = pydicom.dcmread(source)
    mask = np.zeros((ds.Rows, ds.Columns), bool)
    mask[5:20, 4:30] = True
    image = ImageResult(
        source_path=source,
        sop_uid_hash=hash_uid(str(ds.SOPInstanceUID)),
        view_position=str(ds.ViewPosition),
        modality=str(ds.Modality),
        findings=[FindingScore(name, (0.7 + 0.3 * k) % 1, 0.5) for k, name in enumerate(findings)],
        segments=[SegmentMask("lungs", mask, 0.9, (0.5, 0.5))],
    )
    result = StudyResult(
        study_uid_hash=hash_uid(str(ds.StudyInstanceUID)),
        model=ModelIdentity("medvl-aligner", "0" * 64, sam="medvl-sam", sam_sha256="1" * 64),
        images=[image],
    )
    return export_study(result, out_dir)
