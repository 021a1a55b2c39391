"""Coded concepts for what medvl writes into DICOM SEG and SR.

Findings and structures are coded once here; writers never build codes from bare strings.
Where DICOM's own code dictionary (pydicom's CID tables) holds a SNOMED CT concept we use it;
the remaining CheXpert observations have no single SNOMED concept with the same meaning, so they
carry a private code in the ``99MEDVL`` scheme (PS3.3 8.2: "99" prefixes a local scheme) with the
CheXpert name as meaning — honest about what the model predicts rather than a near-synonym.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from medvl import __version__
from medvl import findings as F

LOCAL_SCHEME = "99MEDVL"


def coding_scheme_identification() -> list[Dataset]:
    """The Coding Scheme Identification Sequence item declaring ``99MEDVL`` (PS3.3 C.12.1.1.4).

    A private scheme must be declared in every object that uses it, so a receiver (and
    dciodvfy) knows who is responsible for its meanings.
    """
    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = "medvl local codes"
    item.CodingSchemeVersion = __version__
    item.CodingSchemeResponsibleOrganization = "medvl project"
    return [item]


def _local(value: str, meaning: str) -> Code:
    return Code(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


FINDING_CODES: dict[str, Code] = {
    F.NO_FINDING: codes.SCT.Normal,
    F.ENLARGED_CARDIOMEDIASTINUM: _local("CXR001", F.ENLARGED_CARDIOMEDIASTINUM),
    F.CARDIOMEGALY: codes.SCT.Cardiomegaly,
    F.LUNG_LESION: _local("CXR003", F.LUNG_LESION),
    F.LUNG_OPACITY: _local("CXR004", F.LUNG_OPACITY),
    F.EDEMA: codes.SCT.PulmonaryEdema,
    F.CONSOLIDATION: _local("CXR006", F.CONSOLIDATION),
    F.PNEUMONIA: _local("CXR007", F.PNEUMONIA),
    F.ATELECTASIS: _local("CXR008", F.ATELECTASIS),
    F.PNEUMOTHORAX: codes.SCT.Pneumothorax,
    F.PLEURAL_EFFUSION: codes.SCT.PleuralEffusion,
    F.PLEURAL_OTHER: _local("CXR011", F.PLEURAL_OTHER),
    F.FRACTURE: _local("CXR012", F.FRACTURE),
    F.SUPPORT_DEVICES: _local("CXR013", F.SUPPORT_DEVICES),
}

# Segmented structures: (category, property type) pairs for SEG segment descriptions.
STRUCTURE_CODES: dict[str, tuple[Code, Code]] = {
    "lungs": (codes.SCT.Organ, codes.SCT.Lung),
    "heart": (codes.SCT.Organ, codes.SCT.Heart),
    "lesion": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion),
    "pleural_effusion": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.PleuralEffusion),
    "pneumothorax": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Pneumothorax),
}

PROBABILITY = codes.DCM.Probability  # DCM 122157
PRESENT = codes.SCT.Present
ABSENT = codes.SCT.Absent
UNITLESS = codes.UCUM.NoUnits
CHEST_XRAY_PROCEDURE = Code("399208008", "SCT", "Plain chest X-ray")
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence


def finding_code(name: str) -> Code:
    """The code for a finding; unknown custom findings get a local code named after them."""
    return FINDING_CODES.get(name) or _local(name.upper().replace(" ", "_")[:16], name)


def uses_local_scheme(*concepts: Code) -> bool:
    """Whether any of ``concepts`` is in the ``99MEDVL`` scheme (then it must be declared)."""
    return any(code.scheme_designator == LOCAL_SCHEME for code in concepts)


def structure_codes(name: str) -> tuple[Code, Code]:
    """(category, type) codes for a segmented structure; unknown ones are coded as tissue."""
    return STRUCTURE_CODES.get(name) or (codes.SCT.Tissue, _local(name.upper()[:16], name))
