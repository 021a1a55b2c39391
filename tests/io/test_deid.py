"""De-identification of report text and of DICOM metadata (PS3.15 basic profile subset)."""

from __future__ import annotations

import copy
import importlib.util
import io
import tarfile
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from medvl.io.deid import remap_uid, scrub_dataset, scrub_report_text
from medvl.io.reports import parse_iu_report

# --------------------------------------------------------------------------- report text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Compared with 03/04/2021.", "Compared with [DATE]."),
        ("Compared with 2021-03-04.", "Compared with [DATE]."),
        ("Compared with 3.4.21 film.", "Compared with [DATE] film."),
        ("Prior from March 4, 2021 and 4 Mar 2021.", "Prior from [DATE] and [DATE]."),
        ("Stable since June 2020.", "Stable since [DATE]."),
        ("Compared with May 5 and 5 may 2020.", "Compared with [DATE] and [DATE]."),
        ("Since the 2nd of February.", "Since the [DATE]."),
        ("Compared to the exam on 3/4.", "Compared to the exam on [DATE]."),
        ("Called at 10:45 am.", "Called at [TIME]."),
        ("Called at 5 p.m.", "Called at [TIME]."),
        ("Discussed with Dr. Smith.", "Discussed with [NAME]."),
        ("Discussed with Dr Smith-Jones.", "Discussed with [NAME]."),
        ("Discussed with Dr. J. A. Smith today.", "Discussed with [NAME] today."),
        ("Seen by Drs. Lee and Patel.", "Seen by [NAME]."),
        ("Signed: John A. Smith, M.D.", "Signed: [NAME]."),
        ("MRN: 12345678.", "[MRN]."),
        ("Medical record number 998877 on file.", "[MRN] on file."),
        ("Patient ID AB12345.", "[MRN]."),
        ("Accession #: A1234567.", "[ACCESSION]."),
        ("Acc no. 555123.", "[ACCESSION]."),
        ("Accession ACC-2023-0042 reviewed.", "[ACCESSION] reviewed."),
        ("Study accession: XR-99-1.", "Study [ACCESSION]."),
        ("MRN: AB-12/34.", "[MRN]."),
        ("Call (317) 555-1234.", "Call [PHONE]."),
        ("Call 317-555-1234 ext 22.", "Call [PHONE]."),
        ("Call +1 317.555.1234.", "Call [PHONE]."),
        ("Call 555-1234 or pager 4521.", "Call [PHONE] or [PHONE]."),
        ("Mail jane.doe@hospital.org today.", "Mail [EMAIL] today."),
        ("Reference 12345678 noted.", "Reference [ID] noted."),
        ("Reviewed for Firstname Lastname (MRN 123456).", "Reviewed for [NAME] ([MRN])."),
        ("Attending: John Smith", "Attending: [NAME]"),
        ("Attending radiologist Anna Lee.", "Attending radiologist [NAME]."),
        ("Dictated by Jane Q. Doe on 3/4/2021.", "Dictated by [NAME] on [DATE]."),
        (
            "Electronically signed by Smith, John at 10:32.",
            "Electronically signed by [NAME] at [TIME].",
        ),
        ("Findings discussed with Peter Parker.", "Findings discussed with [NAME]."),
        ("Ms. Garcia was informed.", "[NAME] was informed."),
        ("Mr Lee Chan called.", "[NAME] called."),
        ("Dear Robert, the lungs are clear.", "Dear [NAME], the lungs are clear."),
        ("Read by Mary Jones, RN.", "Read by [NAME]."),
    ],
)
def test_scrub_report_text_replaces_planted_phi(text: str, expected: str) -> None:
    assert scrub_report_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A 2.5 cm nodule in the right upper lobe.",
        "Accurate to within 5 mm of the prior.",
        "Measures 1.2 x 3.4 x 0.8 cm.",
        "Compression deformity of T10-T11 and L1.",
        "Involving 3/4 of the left hemithorax.",
        "Healed fractures of the left 5th through 7th ribs.",
        "Heart size upper limits of normal, 2 views of the chest.",
        "No pneumothorax. The team was notified at the bedside.",
        "Cardiothoracic ratio 0.55; 2 mm clip.",
        "Finding 2 may represent atelectasis.",
        "No acute disease. Reviewed by the radiologist.",
        "CC: Chest pain. Signed and verified.",
        "The attending was notified.",
    ],
)
def test_scrub_report_text_keeps_clinical_text(text: str) -> None:
    assert scrub_report_text(text) == text


def test_scrub_report_text_is_idempotent() -> None:
    text = (
        "EXAM 03/04/2021 10:45 AM. MRN: 12345678. Accession #: A1234567. Findings discussed "
        "with Dr. Smith at (317) 555-1234 on 3/5. No pneumothorax; 2.5 cm nodule."
    )
    once = scrub_report_text(text)
    assert scrub_report_text(once) == once
    for secret in ("03/04/2021", "12345678", "A1234567", "Smith", "555-1234", "3/5", "10:45"):
        assert secret not in once
    assert "2.5 cm nodule" in once and "No pneumothorax" in once


# --------------------------------------------------------------------------- DICOM metadata

PHI = {
    "PatientName": "Plantedname^Secretperson",
    "PatientID": "PHI-ID-7342119",
    "PatientBirthDate": "19450317",
    "AccessionNumber": "ACC99887766",
}


def phi_dataset() -> Dataset:
    """A small radiograph dataset carrying planted PHI at the top level and in sequences."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    ds.PatientAge = "079Y"
    ds.StudyDate, ds.StudyTime = "20210304", "101500"
    ds.SeriesDate, ds.AcquisitionDateTime = "20210304", "20210304101600"
    ds.InstitutionName = "Secret General Hospital"
    ds.ReferringPhysicianName = "Referrer^Doctor"
    ds.OperatorsName = "Operator^Tech"
    ds.StudyDescription = "CHEST PA for Plantedname"
    ds.Modality = "DX"
    ds.Manufacturer = "ACME"
    other = Dataset()
    other.PatientID = PHI["PatientID"]
    ds.OtherPatientIDsSequence = Sequence([other])
    request = Dataset()
    request.AccessionNumber = PHI["AccessionNumber"]
    request.RequestedProcedureID = "RP-42"
    ds.RequestAttributesSequence = Sequence([request])
    source = Dataset()
    source.ReferencedSOPClassUID = ds.SOPClassUID
    source.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    source.ReviewerName = "Inner^Person"  # a PN not listed in the table: emptied
    ds.SourceImageSequence = Sequence([source])
    ds.add_new(0x00091010, "LO", "private vendor note about Plantedname")
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = b"\x00\x01" * 4
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_scrub_dataset_removes_planted_phi() -> None:
    scrubbed = scrub_dataset(phi_dataset(), salt="s3cret")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        assert keyword in scrubbed and scrubbed[keyword].value in ("", None)
    for keyword in ("InstitutionName", "OperatorsName", "PatientAge", "SeriesDate",
                    "AcquisitionDateTime", "StudyDescription", "OtherPatientIDsSequence",
                    "RequestAttributesSequence"):  # fmt: skip
        assert keyword not in scrubbed, keyword
    assert scrubbed.StudyDate == "" and scrubbed.ReferringPhysicianName == ""
    assert scrubbed.SourceImageSequence[0].ReviewerName == ""
    assert not any(elem.tag.is_private for elem in scrubbed.iterall())
    assert scrubbed.Modality == "DX" and scrubbed.Manufacturer == "ACME"
    assert scrubbed.PixelData == b"\x00\x01" * 4
    raw = to_bytes(scrubbed)
    for secret in [*PHI.values(), "Plantedname", "Secret General", "Operator", "20210304"]:
        assert secret.encode() not in raw, secret


def test_scrub_dataset_marks_the_dataset() -> None:
    scrubbed = scrub_dataset(phi_dataset())
    assert scrubbed.PatientIdentityRemoved == "YES"
    assert "basic profile" in scrubbed.DeidentificationMethod
    codes = [item.CodeValue for item in scrubbed.DeidentificationMethodCodeSequence]
    assert codes == ["113100"]
    kept = scrub_dataset(phi_dataset(), keep_uids=True)
    assert [i.CodeValue for i in kept.DeidentificationMethodCodeSequence] == ["113100", "113110"]


def test_uids_are_remapped_consistently() -> None:
    original = phi_dataset()
    scrubbed = scrub_dataset(original, salt="s3cret")
    new_sop = scrubbed.SOPInstanceUID
    assert new_sop != original.SOPInstanceUID
    assert new_sop == remap_uid(original.SOPInstanceUID, "s3cret")
    assert scrubbed.file_meta.MediaStorageSOPInstanceUID == new_sop
    assert scrubbed.SourceImageSequence[0].ReferencedSOPInstanceUID == new_sop
    assert scrubbed.StudyInstanceUID != original.StudyInstanceUID
    assert scrubbed.FrameOfReferenceUID != original.FrameOfReferenceUID
    assert scrubbed.SOPClassUID == original.SOPClassUID
    assert scrubbed.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    again = scrub_dataset(original, salt="s3cret")
    assert again.StudyInstanceUID == scrubbed.StudyInstanceUID
    assert scrub_dataset(original, salt="other").StudyInstanceUID != scrubbed.StudyInstanceUID
    for uid in (new_sop, scrubbed.StudyInstanceUID, scrubbed.SeriesInstanceUID):
        assert UID(uid).is_valid and uid.startswith("2.25.")


def test_keep_uids_retains_instance_uids() -> None:
    original = phi_dataset()
    kept = scrub_dataset(original, keep_uids=True)
    assert kept.SOPInstanceUID == original.SOPInstanceUID
    assert kept.StudyInstanceUID == original.StudyInstanceUID
    assert kept.PatientName == ""


@pytest.mark.parametrize("keep_uids", [False, True])
def test_scrub_dataset_is_idempotent(keep_uids: bool) -> None:
    once = scrub_dataset(phi_dataset(), keep_uids=keep_uids, salt="s")
    twice = scrub_dataset(once, keep_uids=keep_uids, salt="s")
    assert twice == once
    assert twice.file_meta == once.file_meta
    assert to_bytes(twice) == to_bytes(once)


def test_input_is_untouched_unless_in_place() -> None:
    original = phi_dataset()
    before = copy.deepcopy(original)
    scrub_dataset(original)
    assert original == before
    scrub_dataset(original, in_place=True)
    assert original.PatientName == "" and original.SOPInstanceUID != before.SOPInstanceUID


def test_earlier_deidentification_records_are_kept() -> None:
    ds = phi_dataset()
    ds.DeidentificationMethod = "site tool v1"
    scrubbed = scrub_dataset(ds)
    assert list(scrubbed.DeidentificationMethod)[0] == "site tool v1"
    assert scrub_dataset(scrubbed) == scrubbed


def test_scrub_real_pydicom_file() -> None:
    path = get_testdata_file("CT_small.dcm")
    original = pydicom.dcmread(path)
    name, patient_id = str(original.PatientName), str(original.PatientID)
    scrubbed = scrub_dataset(original)
    raw = to_bytes(scrubbed)
    assert name.encode() not in raw and patient_id.encode() not in raw
    reread = pydicom.dcmread(io.BytesIO(raw))
    assert reread.PatientIdentityRemoved == "YES"
    assert (reread.pixel_array == original.pixel_array).all()


def test_scrub_dataset_rejects_non_datasets() -> None:
    with pytest.raises(TypeError, match="pydicom Dataset"):
        scrub_dataset({"PatientName": "x"})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- real IU reports


@pytest.mark.slow
def test_scrub_report_text_on_deidentified_iu_reports() -> None:
    """IU reports are already de-identified: scrubbing must leave their clinical text alone."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        pytest.skip("torchxrayvision is not installed")
    archive_path = Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"
    if not archive_path.is_file():
        pytest.skip(f"{archive_path} is missing")
    sections: list[str] = []
    with tarfile.open(archive_path) as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".xml"):
                data = archive.extractfile(member).read()  # type: ignore[union-attr]
                sections.extend(parse_iu_report(data).sections.values())
    changed = [s for s in sections if scrub_report_text(s) != s]
    assert len(sections) > 10_000
    assert len(changed) < 0.005 * len(sections)
    for text in changed:
        scrubbed = scrub_report_text(text)
        assert "[DATE]" not in scrubbed and "[ID]" not in scrubbed and "[PHONE]" not in scrubbed


REPORT_WORDS = st.sampled_from(
    ["Dr.", "Smith", "may", "May", "5", "2021", "03/04", "/", "-", ":", "10", "am", "no", ".",
     ",", ";", "\n", "MRN", "#", "1234567", "(317)", "555-1234", "XXXX", "of", "2.5", "cm", "ext",
     "Acc", "pager", "on", "3/4", "[DATE]", "M.D."]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(REPORT_WORDS, st.text(max_size=4)), max_size=30).map(" ".join))
def test_scrub_report_text_is_idempotent_on_any_text(text: str) -> None:
    once = scrub_report_text(text)
    assert scrub_report_text(once) == once
