"""De-identification of report text and DICOM metadata.

Report text: :func:`scrub_report_text` replaces dates, times, physician names, MRNs and other
ID-like numbers, accession numbers, phone numbers and e-mail addresses with placeholder tokens
(``[DATE]``, ``[NAME]`` ...), which :func:`medvl.io.reports.clean_model_text` later drops.

DICOM metadata: :func:`scrub_dataset` applies the Basic Application Level Confidentiality Profile
of DICOM PS3.15 Annex E (Table E.1-1) for the attributes of the patient, study, series, equipment,
request and SR-observer modules, i.e. everything medvl reads or copies into the SEG / SR objects it
writes. We evaluated ``dicognito`` and ``deid`` (PyPI) first: dicognito replaces identifiers with
plausible fakes and shifts dates, so scrubbing twice changes the data again (not idempotent) and
fake names look real; deid's default recipe deletes every ``*UID`` attribute, which breaks the
study/series/instance structure, and needs its own recipe language to do otherwise. The profile
subset here is implemented from the standard's table, with these conservative extensions:

* every private attribute is removed (the profile's default, without Retain Safe Private);
* any Person Name (PN) or date/time (DA, DT, TM) attribute not listed is emptied;
* instead of listing every "U" row, every UI attribute whose value is not a DICOM-registered UID
  (``1.2.840.10008.*``, e.g. SOP Class and Transfer Syntax UIDs) is remapped, consistently and
  deterministically: ``2.25.<128-bit hash of salt and UID>``.

Multi-action rows (``X/Z``, ``X/Z/D``) are resolved to X (remove) for attributes that are Type 3
in the image IODs medvl handles and to Z (empty) for Type 2 ones.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

METHOD = "medvl PS3.15 E.1-1 basic profile"
_UIDS_REMAPPED = "UIDs remapped"
_UIDS_RETAINED = "UIDs retained"
DUMMY = "ANONYMIZED"

# Table E.1-1, Basic Profile column: Z = replace with a zero-length value.
ZERO_KEYWORDS: tuple[str, ...] = (
    "AccessionNumber", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "ReferringPhysicianName", "StudyDate", "StudyTime", "StudyID", "ContentDate", "ContentTime",
    "ConsultingPhysicianName", "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest", "ContentCreatorName",
    "VerifyingObserverIdentificationCodeSequence",
)  # fmt: skip
# D = replace with a non-zero dummy value (Type 1 attributes of SR documents).
DUMMY_KEYWORDS: tuple[str, ...] = ("VerifyingObserverName", "VerifyingOrganization", "PersonName")
# X = remove.
REMOVE_KEYWORDS: tuple[str, ...] = (
    # patient
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
    "PatientBirthTime", "PatientAge", "PatientSize", "PatientWeight", "PatientAddress",
    "PatientTelephoneNumbers", "PatientTelecomInformation", "PatientMotherBirthName",
    "MedicalRecordLocator", "EthnicGroup", "Occupation", "AdditionalPatientHistory",
    "PatientComments", "PatientReligiousPreference", "MilitaryRank", "BranchOfService",
    "CountryOfResidence", "RegionOfResidence", "IssuerOfPatientID",
    "PatientInsurancePlanCodeSequence", "InsurancePlanIdentification", "ResponsiblePerson",
    "ResponsibleOrganization",
    "PregnancyStatus", "SmokingStatus", "MedicalAlerts", "Allergies", "LastMenstrualDate",
    "PatientState", "SpecialNeeds", "PatientSexNeutered", "ReferencedPatientSequence",
    "ReferencedPatientPhotoSequence", "PatientInstitutionResidence", "PatientTransportArrangements",
    # visit and admission
    "AdmissionID", "IssuerOfAdmissionIDSequence", "AdmittingDate", "AdmittingTime",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "CurrentPatientLocation",
    "ServiceEpisodeID", "ServiceEpisodeDescription", "VisitComments",
    # people
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianIdentificationSequence",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
    "NameOfPhysiciansReadingStudy", "PhysiciansReadingStudyIdentificationSequence",
    "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence", "OperatorsName",
    "OperatorIdentificationSequence", "RequestingPhysician", "ScheduledPerformingPhysicianName",
    "AuthorObserverSequence", "ParticipantSequence", "CustodialOrganizationSequence",
    "HumanPerformerName", "HumanPerformerOrganization", "ActualHumanPerformersSequence",
    "ScheduledHumanPerformersSequence", "PersonAddress", "PersonTelephoneNumbers",
    "PersonTelecomInformation", "OrderEnteredBy", "OrderEntererLocation",
    "OrderCallbackPhoneNumber",
    "NamesOfIntendedRecipientsOfResults", "IntendedRecipientsOfResultsIdentificationSequence",
    # institution and equipment
    "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionalDepartmentName", "InstitutionalDepartmentTypeCodeSequence", "StationName",
    "DeviceSerialNumber", "DeviceUID", "DetectorID", "PlateID", "CassetteID", "GantryID",
    "GeneratorID", "UniqueDeviceIdentifier", "UDISequence", "DeviceDescription",
    # study, series, request, procedure step
    "StudyDescription", "SeriesDescription", "StudyComments", "ImageComments", "FrameComments",
    "IdentifyingComments", "AcquisitionComments", "DerivationDescription", "ProtocolName",
    "AcquisitionProtocolDescription", "TextComments", "TextString", "StudyIDIssuer",
    "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "RequestAttributesSequence", "RequestedProcedureDescription", "RequestedProcedureID",
    "RequestedProcedureComments", "RequestedProcedureLocation", "RequestingService",
    "RequestedContrastAgent", "ReasonForStudy", "ReasonForTheRequestedProcedure",
    "ReasonForRequestedProcedureCodeSequence", "ReasonForTheImagingServiceRequest",
    "ImagingServiceRequestComments", "ReasonForVisit", "ReasonForVisitCodeSequence",
    "ScheduledStudyLocation", "ScheduledStudyLocationAETitle", "PerformedProcedureStepID",
    "PerformedProcedureStepDescription", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime", "PerformedStationAETitle", "PerformedStationName",
    "PerformedLocation", "CommentsOnThePerformedProcedureStep", "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepLocation", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime", "ScheduledStationAETitle", "ScheduledStationName",
    "PreMedication", "SpecimenAccessionNumber",
    # dates and times of acquisition
    "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "SeriesDate", "SeriesTime",
    "OverlayDate", "OverlayTime", "CurveDate", "CurveTime", "TimezoneOffsetFromUTC",
    "InstanceCoercionDateTime",
    # containers of copies, signatures and thumbnails
    "OriginalAttributesSequence", "ModifiedAttributesSequence", "DigitalSignaturesSequence",
    "IconImageSequence", "DataSetTrailingPadding",
)  # fmt: skip


def _tags(keywords: tuple[str, ...]) -> frozenset[int]:
    tags = {tag_for_keyword(k) for k in keywords}
    unknown = [k for k in keywords if tag_for_keyword(k) is None]
    if unknown:
        raise ValueError(f"not DICOM keywords in pydicom's dictionary: {unknown}")
    return frozenset(t for t in tags if t is not None)


_ZERO, _DUMMY, _REMOVE = _tags(ZERO_KEYWORDS), _tags(DUMMY_KEYWORDS), _tags(REMOVE_KEYWORDS)
_TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})


def _is_overlay_or_curve(tag: int) -> bool:
    """Curve data (50xx,xxxx) and overlay comments / data (60xx,3000 and 60xx,4000): X."""
    group, element = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x501E and group % 2 == 0:
        return True
    return 0x6000 <= group <= 0x601E and group % 2 == 0 and element in (0x3000, 0x4000)


def remap_uid(uid: str, salt: str = "") -> str:
    """Deterministic replacement for an instance UID: ``2.25.`` + 128 bits of SHA-256.

    The same ``uid`` and ``salt`` always give the same result, so references between objects of
    one study stay consistent. Without a secret salt, anyone holding an original UID can confirm
    a match: pass one when data leave the institution.
    """
    digest = hashlib.sha256(f"{salt}\0{uid}".encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _walk(ds: Dataset, visit: Callable[[Dataset, DataElement], None]) -> None:
    for tag in list(ds.keys()):
        if tag not in ds:
            continue
        elem = ds[tag]
        visit(ds, elem)
        if tag in ds and elem.VR == "SQ" and elem.value is not None:
            for item in elem.value:
                _walk(item, visit)


def _methods(ds: Dataset) -> list[str]:
    value = ds.get("DeidentificationMethod", None)
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]


def _already_scrubbed_with_new_uids(ds: Dataset) -> bool:
    return f"{METHOD}; {_UIDS_REMAPPED}" in _methods(ds)


def scrub_dataset(
    ds: Dataset, *, keep_uids: bool = False, salt: str = "", in_place: bool = False
) -> Dataset:
    """De-identify a DICOM dataset with the PS3.15 basic profile (subset; see module docstring).

    Parameters
    ----------
    ds
        The dataset; pixel data are untouched (burned-in annotations are out of scope).
    keep_uids
        Keep instance UIDs (the profile's Retain UIDs Option).
    salt
        Secret mixed into the UID hash (see :func:`remap_uid`).
    in_place
        Modify ``ds`` itself instead of a deep copy.

    Returns
    -------
    Dataset
        The scrubbed dataset, with PatientIdentityRemoved = YES, DeidentificationMethod and
        DeidentificationMethodCodeSequence (113100, plus 113110 when UIDs are kept) set.
        Scrubbing a scrubbed dataset again with the same options changes nothing: a dataset whose
        DeidentificationMethod says medvl already remapped its UIDs is not remapped twice.
    """
    if not isinstance(ds, Dataset):
        raise TypeError(f"scrub_dataset expects a pydicom Dataset, got {type(ds).__name__}")
    out = ds if in_place else copy.deepcopy(ds)
    remap = not keep_uids and not _already_scrubbed_with_new_uids(out)

    def visit(parent: Dataset, elem: DataElement) -> None:
        tag = int(elem.tag)
        if elem.tag.is_private or tag in _REMOVE or _is_overlay_or_curve(tag):
            del parent[tag]
        elif tag in _DUMMY:
            elem.value = DUMMY if elem.VR != "SQ" else Sequence()
        elif tag in _ZERO or elem.VR == "PN" or elem.VR in _TEMPORAL_VRS:
            elem.value = Sequence() if elem.VR == "SQ" else ""
        elif remap and elem.VR == "UI" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            new = [v if not UID(str(v)).is_private else remap_uid(str(v), salt) for v in values]
            elem.value = new if elem.VM > 1 else new[0]

    _walk(out, visit)
    meta = getattr(out, "file_meta", None)
    if remap and meta is not None and meta.get("MediaStorageSOPInstanceUID"):
        meta.MediaStorageSOPInstanceUID = remap_uid(str(meta.MediaStorageSOPInstanceUID), salt)
    _mark(out, keep_uids=keep_uids)
    return out


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _mark(ds: Dataset, *, keep_uids: bool) -> None:
    """Record what was done, as PS3.15 E.1.1 asks; earlier tools' records are kept."""
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    uids = (
        _UIDS_RETAINED if keep_uids and not _already_scrubbed_with_new_uids(ds) else _UIDS_REMAPPED
    )
    others = [m for m in _methods(ds) if not m.startswith(METHOD)]
    methods = [*others, f"{METHOD}; {uids}"]
    ds.DeidentificationMethod = methods if len(methods) > 1 else methods[0]
    ours = {"113100": "Basic Application Confidentiality Profile"}
    if uids == _UIDS_RETAINED:
        ours["113110"] = "Retain UIDs Option"
    kept = [
        item
        for item in ds.get("DeidentificationMethodCodeSequence", [])
        if item.get("CodeValue") not in ("113100", "113110")
    ]
    ds.DeidentificationMethodCodeSequence = Sequence(
        [*kept, *(_code(v, m) for v, m in ours.items())]
    )


# ----------------------------------------------------------------------------- report text

_MONTH = (
    r"(?i:(?:january|february|march|april|may|june|july|august|september|october|november|"
    r"december)|(?:jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec)(?:\.(?=\s*\d))?)"
)
# Lower-case "may" is a month only with a year ("5 may 2021"): "2 may represent" is clinical text.
_NOT_BARE_MAY = r"(?!may\b(?![\s,]+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}|,?\s+\d{4}))"
_CAPITALISED = r"(?:[A-Z]\.\s*)*[A-Z][A-Za-z'-]+"
# One to three capitalised words ("Jane", "Jane Q. Doe", "Doe, Jane"): a person's name where
# the position says a name comes.
_NAME_WORDS = rf"{_CAPITALISED}(?:,?\s+{_CAPITALISED}){{0,2}}"
# Report positions followed by a bare name: sign-off and routing lines.
_NAME_CUES = (
    r"\b(?i:attending(?:\s+(?:physician|radiologist))?|(?:reviewed|discussed)\s+(?:by|for|with)|"
    r"dictated\s+by|(?:electronically\s+)?signed(?:\s+by)?|(?:read|interpreted|transcribed|"
    r"verified|approved|reported|ordered)\s+by|referring\s+(?:physician|doctor|provider))"
)
# An identifier after its label: one token of letters, digits, '-' or '/' holding a digit
# ("12345", "AB12CD", "ACC-2023-0042", "XR-99-1").
_ID_TOKEN = r"(?=[\w/-]*\d)[\w/-]+"
# (replacement, pattern), applied in order; case-sensitive unless a group says (?i:...), because
# names must be capitalised.
_TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (token, re.compile(pattern))
    for token, pattern in (
        ("[EMAIL]", r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
        (
            "[ACCESSION]",
            r"\b(?i:accession|acc)\b(?i:\s*(?:number|no\.?|num\.?|#))?\s*[:#]?\s*" + _ID_TOKEN,
        ),
        (
            "[MRN]",
            r"\b(?i:mrn|medical\s+record(?:\s+(?:number|no\.?|#))?|mr\s*#|patient\s+id|pt\s+id|"
            r"unit\s+(?:number|no\.?))\s*[:#]?\s*" + _ID_TOKEN,
        ),
        (
            "[PHONE]",
            r"(?<![\w.])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s*|\d{3}[\s.-])\d{3}[\s.-]\d{4}\b"
            r"(?:\s*(?i:ext\.?|x)\s*\d{1,5})?"
            r"|\b\d{3}-\d{4}\b"
            r"|\b(?i:pager|page|ext\.?|extension|beeper)\s*[:#]?\s*\d{3,7}\b",
        ),
        ("[DATE]", r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b"),
        ("[DATE]", r"\b\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})\b(?![./-]\d)"),
        (
            "[DATE]",
            rf"\b\d{{1,2}}(?i:st|nd|rd|th)?\s+(?i:of\s+)?{_NOT_BARE_MAY}{_MONTH}"
            r"(?:,?\s+\d{4})?(?!\w)",
        ),
        ("[DATE]", rf"\b{_NOT_BARE_MAY}{_MONTH}\s+\d{{1,2}}(?i:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b"),
        ("[DATE]", rf"\b{_MONTH}\s+\d{{4}}\b"),
        (r"\1[DATE]", r"\b((?i:on|dated?|from)\s+)\d{1,2}/\d{1,2}\b(?!/)"),
        (
            "[TIME]",
            r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s*(?i:[ap]\.?m)(?!\w))?|\b\d{1,2}\s*(?i:[ap]\.?m)(?!\w)",
        ),
        (
            "[NAME]",
            rf"\b(?i:drs?|doctor|prof)\.?\s+{_CAPITALISED}(?:\s+{_CAPITALISED})?"
            rf"(?:\s+and\s+{_CAPITALISED}(?:\s+{_CAPITALISED})?)?",
        ),
        (
            "[NAME]",
            r"\b[A-Z][a-z'-]+(?:\s+[A-Z]\.)?(?:\s+[A-Z][a-z'-]+)+,?\s+"
            r"(?:M\.?D|D\.?O|R\.?N|N\.?P|P\.?A-C|Ph\.?D|MBBS|FRCR)\b",
        ),
        ("[NAME]", rf"\b(?:Mr|Mrs|Ms|Miss|Mx)\.?\s+{_NAME_WORDS}"),
        (r"\1[NAME]", rf"\b({_NAME_CUES}\s*[:,-]?\s*){_NAME_WORDS}"),
        (r"\1[NAME]", rf"(?:^|(?<=[\n.;]))(\s*(?i:dear|hi|hello)\s+){_NAME_WORDS}"),
        ("[ID]", r"\b(?=[A-Za-z]*\d)[A-Za-z0-9]{0,3}\d{6,}[A-Za-z0-9]*\b"),
    )
)


def scrub_report_text(text: str) -> str:
    """Replace PHI-like spans of a report with placeholder tokens.

    Handled: e-mail addresses ``[EMAIL]``; accession numbers ``[ACCESSION]``; MRNs and patient
    IDs after a label ``[MRN]``; phone, pager and extension numbers ``[PHONE]``; dates in numeric
    (2021-03-04, 03/04/2021, 3.4.21) and written forms (March 4, 2021; 4 Mar 2021; March 2021;
    "on 3/4") ``[DATE]``; clock times ``[TIME]``; ``[NAME]`` for names after Dr./Drs./Doctor/Prof.
    or Mr/Mrs/Ms/Miss/Mx, names followed by MD/DO/RN/NP/PA-C/PhD, bare names in sign-off and
    routing positions (attending, reviewed by/for/with, discussed with, dictated/read/
    interpreted/transcribed/verified/approved/reported/ordered by, signed, electronically
    signed by, referring physician) and after a salutation opening a line or sentence (Dear,
    Hi, Hello); and any other run of six or more digits ``[ID]``.
    Decimals and measurements ("2.5 cm", "T10-T11", "3/4 of the lung") are kept. Scrubbing
    scrubbed text changes nothing.
    """
    for token, pattern in _TEXT_RULES:
        text = pattern.sub(token, text)
    return text
