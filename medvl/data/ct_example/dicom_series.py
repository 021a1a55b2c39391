"""Write a :class:`~medvl.data.ct_example.volume.CtVolume` as a DICOM CT series.

One CT Image Storage instance per slice, explicit VR little endian, with the Image Plane
module from the volume's LPS geometry, stored values rescaled to HU (RescaleSlope 1, the
intercept chosen so that every value fits unsigned 16 bits, as scanners do), the lung and
mediastinal windows in WindowCenter/WindowWidth, and a de-identified patient module
(PatientIdentityRemoved YES). UIDs are derived from a fixed seed, so reruns write the same
bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medvl.data.ct_example.volume import CtVolume
from medvl.io.windows import CT_WINDOW_PRESETS

WINDOWS = ("lung", "mediastinum")  # CT_WINDOW_PRESETS written into every slice, in this order


@dataclass(frozen=True)
class SeriesIdentity:
    """The de-identified patient and study attributes every instance carries."""

    patient_name: str = "CT^Example"
    patient_id: str = "MEDVL-CT-0001"
    study_date: str = "20000101"  # placeholder date; the real one is not known
    study_time: str = "120000"
    study_id: str = "1"
    seed: str = "medvl-ct-example"  # UIDs are derived from it

    def uid(self, *parts: object) -> str:
        """A UID under pydicom's root derived from the seed and ``parts``."""
        return generate_uid(entropy_srcs=[self.seed, *map(str, parts)])


def _patient_study(ds: Dataset, ident: SeriesIdentity) -> None:
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Public example volume (NIfTI); no identifiers were present"
    ds.StudyInstanceUID = ident.uid("study")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ident.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ident.study_time
    ds.StudyID = ident.study_id
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CT chest (public example)"
    ds.FrameOfReferenceUID = ident.uid("frame-of-reference")
    ds.PositionReferenceIndicator = ""


def _slice_dataset(
    volume: CtVolume, z: int, stored: np.ndarray, intercept: float, ident: SeriesIdentity
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ident.uid("slice", z)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    _patient_study(ds, ident)
    ds.Modality = "CT"
    ds.SeriesInstanceUID = ident.uid("series")
    ds.SeriesNumber = 1
    ds.SeriesDescription = "CT chest axial 2.5 mm"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.Manufacturer = ""
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.InstanceNumber = z + 1
    ds.AcquisitionNumber = 1
    ds.KVP = ""
    normal, col_dir, row_dir = volume.direction
    position = np.asarray(volume.origin) + z * volume.spacing[0] * normal
    ds.ImagePositionPatient = [round(float(v), 6) for v in position]
    ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [float(volume.spacing[1]), float(volume.spacing[2])]
    ds.SliceThickness = float(volume.spacing[0])
    ds.SliceLocation = round(float(position @ normal), 6)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = [CT_WINDOW_PRESETS[name][0] for name in WINDOWS]
    ds.WindowWidth = [CT_WINDOW_PRESETS[name][1] for name in WINDOWS]
    ds.WindowCenterWidthExplanation = [name.upper() for name in WINDOWS]
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    return ds


def write_ct_series(
    volume: CtVolume, folder: str | Path, ident: SeriesIdentity | None = None
) -> list[Dataset]:
    """Write one ``CT<z>.dcm`` per slice into ``folder``; return the datasets (slice order)."""
    ident = ident or SeriesIdentity()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    intercept = float(min(-1024, int(volume.hu.min())))
    stored = (volume.hu.astype(np.int32) - int(intercept)).astype(np.uint16)
    datasets = []
    for z in range(volume.hu.shape[0]):
        ds = _slice_dataset(volume, z, stored[z], intercept, ident)
        pydicom.dcmwrite(folder / f"CT{z:04d}.dcm", ds, enforce_file_format=True)
        datasets.append(ds)
    return datasets
