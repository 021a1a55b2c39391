"""Write phantom radiographs as real DICOM files with headers drawn from the IU header table.

Each phantom image copies the acquisition attributes of a real Indiana University image (the
paired report's own image when the table has it, else a random one of the same view class):
modality (CR or DX), photometric interpretation (MONOCHROME1 or MONOCHROME2), bits stored
(12-16), presentation LUT shape, KVP and the physical field of view, so the phantom's pixel
spacing is the real field divided by the phantom's size. Stored values fill a random part of
the stored range; WindowCenter/Width cover it exactly, so a reader that applies the VOI window
(and inverts MONOCHROME1 once) gets back the rendered display values.

Identifiers are synthetic: PatientName ``PHANTOM^<n>``, PatientID ``PHANTOM<n>``, UIDs from
``pydicom.uid.generate_uid`` with deterministic entropy (seed, study, image), one study date and
time per study from its own ``(seed, study)`` stream, so every image of a study agrees. Files
say PatientIdentityRemoved YES with the :data:`DEIDENTIFICATION_METHOD` that makes it true.
Nothing here is logged.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medvl.data.sources.iu.headers import FRONTAL_VIEWS, IUHeader, header_image_id
from medvl.io.codecs.encode import compress

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
DEFAULT_FIELD_MM = 430.0  # 17-inch cassette, the common chest field
MIN_BITS, MAX_BITS = 12, 16
DATE_STREAM = 0xDA7E  # the study date/time stream: independent of the rendering draws
# PatientIdentityRemoved YES needs a method (PS3.3 C.7.1.1, Type 1C); a phantom has no patient.
DEIDENTIFICATION_METHOD = "Synthetic phantom: no patient; identifiers generated"


@dataclass(frozen=True)
class HeaderChoice:
    """The acquisition facts a phantom image takes from one real header row."""

    modality: str
    photometric: str
    bits_stored: int
    presentation_lut_shape: str
    rescale_type: str
    kvp: float | None
    field_mm: float
    source_image: str

    @classmethod
    def from_header(cls, header: IUHeader) -> HeaderChoice:
        """Clamp a real row to what a phantom file needs (12-16 bits, a positive field)."""
        spacing = header.pixel_spacing or header.imager_pixel_spacing or (0.0, 0.0)
        field_mm = max(header.rows * spacing[0], header.columns * spacing[1])
        modality = header.modality if header.modality in ("CR", "DX") else "CR"
        photometric = (
            header.photometric if header.photometric.startswith("MONOCHROME") else "MONOCHROME2"
        )
        shape = header.presentation_lut_shape.upper()
        expected = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        return cls(
            modality=modality,
            photometric=photometric,
            bits_stored=int(np.clip(header.bits_stored or MIN_BITS, MIN_BITS, MAX_BITS)),
            presentation_lut_shape=shape if shape == expected else "",
            rescale_type=header.rescale_type or "US",
            kvp=header.kvp if header.kvp else None,
            field_mm=field_mm if 250.0 <= field_mm <= 500.0 else DEFAULT_FIELD_MM,
            source_image=header.image_id,
        )


class HeaderSampler:
    """Real IU header rows by image id, and by view class for images without their own row."""

    def __init__(self, headers: list[IUHeader]) -> None:
        self.by_id = {h.image_id: h for h in headers}
        self.frontal = [h for h in headers if h.view_position in FRONTAL_VIEWS]
        self.lateral = [
            h for h in headers if h.view_position and h.view_position not in FRONTAL_VIEWS
        ]
        if not self.frontal or not self.lateral:
            raise ValueError("header table needs both frontal and lateral rows to sample from")

    def choose(self, image_id: str, lateral: bool, rng: np.random.Generator) -> HeaderChoice:
        """The image's own row when the table has it, else a random row of its view class."""
        header = self.by_id.get(image_id) or self.by_id.get(header_image_id(image_id))
        if header is None:
            pool = self.lateral if lateral else self.frontal
            header = pool[int(rng.integers(len(pool)))]
        return HeaderChoice.from_header(header)


@dataclass(frozen=True)
class Identity:
    """Synthetic identifiers of one phantom image (never logged)."""

    patient_name: str
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str
    study_time: str
    series_number: int
    study_id: str


def make_identity(seed: int, index: int, image: int) -> Identity:
    """Deterministic UIDs and a seeded date/time for image ``image`` of study ``index``.

    The date and time depend on ``(seed, index)`` only: every image of a study shares them.
    """
    entropy = [f"medvl-phantom:{seed}:{index}"]
    rng = np.random.default_rng([seed, index, DATE_STREAM])
    day = int(rng.integers(0, 365 * 4))
    date = np.datetime64("2011-01-01") + np.timedelta64(day, "D")
    seconds = int(rng.integers(7 * 3600, 19 * 3600))
    return Identity(
        patient_name=f"PHANTOM^{index:06d}",
        patient_id=f"PHANTOM{index:06d}",
        study_uid=generate_uid(entropy_srcs=[*entropy, "study"]),
        series_uid=generate_uid(entropy_srcs=[*entropy, f"series{image}"]),
        sop_uid=generate_uid(entropy_srcs=[*entropy, f"image{image}"]),
        study_date=str(date).replace("-", ""),
        study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        series_number=image + 1,
        study_id=f"{index % 10**6:06d}",
    )


def chest_code() -> Dataset:
    """The anatomic region code for the chest (SNOMED CT 43799004, CID 4009)."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "43799004", "SCT", "Chest"
    return item


def stored_values(pixels: np.ndarray, choice: HeaderChoice, rng: np.random.Generator):
    """Display values [0, 1] -> stored uint16 in a random sub-range, plus its (center, width).

    MONOCHROME1 stores the inverse, so low stored values are bright after the reader inverts.
    """
    top = (1 << choice.bits_stored) - 1
    span = int(top * rng.uniform(0.55, 0.95))
    offset = int(rng.integers(0, top - span + 1))
    if choice.photometric == "MONOCHROME1":
        scaled = pixels * np.float32(-span) + np.float32(offset + span)
    else:
        scaled = pixels * np.float32(span) + np.float32(offset)
    stored = np.rint(scaled, out=scaled).astype(np.uint16)
    return stored, (offset + span / 2.0, float(span + 1))


def build_dataset(
    stored: np.ndarray,
    window: tuple[float, float],
    choice: HeaderChoice,
    identity: Identity,
    view: str,
    orientation: tuple[str, str],
    spacing: float,
) -> Dataset:
    """A complete CR / DX dataset around ``stored`` pixels (file meta included)."""
    sop_class = DX_PRESENTATION_STORAGE if choice.modality == "DX" else CR_STORAGE
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = identity.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, identity.sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = identity.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = identity.study_time
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.Modality = choice.modality
    ds.Manufacturer = "medvl"
    ds.ManufacturerModelName = "phantom radiograph generator"
    ds.ImageComments = "Synthetic phantom radiograph: pixels are simulated, not a patient image"
    ds.PatientName, ds.PatientID = identity.patient_name, identity.patient_id
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    if choice.kvp:
        ds.KVP = f"{choice.kvp:g}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = identity.study_uid, identity.series_uid
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = identity.study_id, identity.series_number, 1
    ds.PatientOrientation = list(orientation)
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
    if choice.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
        # DX Anatomy Imaged, Detector, Positioning and Acquisition Context: the chest (an
        # unpaired region) and Type 2 attributes a phantom does not know, present and empty.
        ds.ImageLaterality = "U"
        ds.AnatomicRegionSequence = [chest_code()]
        ds.DetectorType, ds.PositionerType = "", ""
        ds.AcquisitionContextSequence = []
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = choice.photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, choice.bits_stored, choice.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", choice.rescale_type
    ds.WindowCenter, ds.WindowWidth = f"{window[0]:.1f}", f"{window[1]:.1f}"
    ds.WindowCenterWidthExplanation = "FULL"
    if choice.presentation_lut_shape:
        ds.PresentationLUTShape = choice.presentation_lut_shape
    ds.PixelData = stored.tobytes()
    return ds


def write_dataset(path: Path, ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> str:
    """Write ``ds`` as a DICOM Part 10 file; return the sha256 of the bytes written.

    A ``transfer_syntax`` other than Explicit VR Little Endian compresses the pixels first,
    losslessly (RLE, JPEG-LS, JPEG 2000, HTJ2K: :func:`medvl.io.codecs.encode.compress`).
    """
    if transfer_syntax != ExplicitVRLittleEndian:
        compress(ds, transfer_syntax)
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
