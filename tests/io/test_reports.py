"""Report sections, Indiana University XML, sentence splitting and model text."""

from __future__ import annotations

import pytest

from medvl.io.reports import (
    SECTION_NAMES,
    clean_model_text,
    parse_iu_report,
    sections_from_iu_xml,
    split_sections,
    split_sentences,
)

# --------------------------------------------------------------------------- split_sections


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "FINDINGS: Lungs are clear.\nIMPRESSION: No acute disease.",
            {"findings": "Lungs are clear.", "impression": "No acute disease."},
        ),
        (
            "Findings - lungs are clear.\nImpression - normal chest.",
            {"findings": "lungs are clear.", "impression": "normal chest."},
        ),
        (
            "FINDINGS\nThe heart is normal.\n\nIMPRESSION\nNormal chest.\n",
            {"findings": "The heart is normal.", "impression": "Normal chest."},
        ),
        (
            "findings: no effusion. impression: normal.",
            {"findings": "no effusion.", "impression": "normal."},
        ),
        (
            "CLINICAL HISTORY: cough.\nCOMPARISON: None.\nTECHNIQUE: PA and lateral.\n"
            "FINDINGS: Clear.\nIMPRESSION: Normal.",
            {
                "indication": "cough.",
                "comparison": "None.",
                "technique": "PA and lateral.",
                "findings": "Clear.",
                "impression": "Normal.",
            },
        ),
        ("HISTORY: fever\nFINDINGS: clear", {"indication": "fever", "findings": "clear"}),
        (
            "Reason for exam: fall\nConclusion: no fracture",
            {"indication": "fall", "impression": "no fracture"},
        ),  # fmt: skip
        ("INDICATION \u2013 chest pain", {"indication": "chest pain"}),
        (
            "CHEST, TWO VIEWS\nFINDINGS: Clear lungs.",
            {"preamble": "CHEST, TWO VIEWS", "findings": "Clear lungs."},
        ),
        ("Lungs are clear. No effusion.", {"preamble": "Lungs are clear. No effusion."}),
        ("COMPARISON:\nFINDINGS: Stable.", {"findings": "Stable."}),
        (
            "IMPRESSION: Small effusion.\nNOTIFICATION: Discussed with the team.",
            {"impression": "Small effusion.", "other": "Discussed with the team."},
        ),
        (
            "FINDINGS: Left effusion. FINDINGS: Right clear.",
            {"findings": "Left effusion. Right clear."},
        ),  # fmt: skip
        (
            "FINDINGS: The findings are unchanged. History of smoking noted.",
            {"findings": "The findings are unchanged. History of smoking noted."},
        ),
        ("", {}),
    ],
)
def test_split_sections(text: str, expected: dict[str, str]) -> None:
    assert split_sections(text) == expected


def test_missing_sections_are_absent() -> None:
    sections = split_sections("IMPRESSION: Normal chest.")
    assert set(sections) == {"impression"}
    assert all(name in SECTION_NAMES for name in sections)


def test_whitespace_is_collapsed() -> None:
    assert split_sections("FINDINGS:   Lungs\n  are\tclear.  ") == {"findings": "Lungs are clear."}


# --------------------------------------------------------------------------- IU XML

IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <uId id="CXR42"/>
  <MedlineCitation><Article><Abstract>
    <AbstractText Label="COMPARISON">Chest radiograph on XXXX.</AbstractText>
    <AbstractText Label="INDICATION">XXXX yr old female with dyspnea.</AbstractText>
    <AbstractText Label="FINDINGS">Normal cardiac contour. Clear lung XXXX bilaterally.
      No pleural effusion or pneumothorax.</AbstractText>
    <AbstractText Label="IMPRESSION">No acute cardiopulmonary abnormalities.</AbstractText>
    <AbstractText Label="ADDENDUM">Reviewed.</AbstractText>
  </Abstract></Article></MedlineCitation>
  <MeSH>
    <major>Cardiomegaly/mild</major>
    <major>Pleural Effusion/left/small</major>
    <automatic>Lung</automatic>
  </MeSH>
  <parentImage id="CXR42_IM-0001-1001"><caption>PA</caption></parentImage>
  <parentImage id="CXR42_IM-0001-2001"><caption>Lateral</caption></parentImage>
</eCitation>
"""


def test_sections_from_iu_xml() -> None:
    sections = sections_from_iu_xml(IU_XML)
    assert sections == {
        "comparison": "Chest radiograph on XXXX.",
        "indication": "XXXX yr old female with dyspnea.",
        "findings": (
            "Normal cardiac contour. Clear lung XXXX bilaterally. No pleural effusion or "
            "pneumothorax."
        ),
        "impression": "No acute cardiopulmonary abnormalities.",
        "other": "Reviewed.",
    }
    assert sections_from_iu_xml(IU_XML.encode("utf-8")) == sections


def test_iu_xml_empty_section_is_absent() -> None:
    xml = (
        '<eCitation><AbstractText Label="FINDINGS"/>'
        '<AbstractText Label="IMPRESSION">Normal.</AbstractText></eCitation>'
    )
    assert sections_from_iu_xml(xml) == {"impression": "Normal."}


def test_parse_iu_report() -> None:
    report = parse_iu_report(IU_XML)
    assert report.report_id == "CXR42"
    assert report.mesh_major == ["Cardiomegaly/mild", "Pleural Effusion/left/small"]
    assert report.mesh_automatic == ["Lung"]
    assert report.image_ids == ["CXR42_IM-0001-1001", "CXR42_IM-0001-2001"]
    assert report.sections["impression"] == "No acute cardiopulmonary abnormalities."


def test_malformed_xml_raises_value_error() -> None:
    with pytest.raises(ValueError, match="not well-formed"):
        sections_from_iu_xml("<eCitation><AbstractText Label='FINDINGS'>oops</eCitation>")


# --------------------------------------------------------------------------- sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A 2.5 cm nodule. No effusion.", ["A 2.5 cm nodule.", "No effusion."]),
        (
            "Atelectasis vs. pneumonia. Dr. Smith agreed.",
            ["Atelectasis vs. pneumonia.", "Dr. Smith agreed."],
        ),  # fmt: skip
        ("No effusion; mild cardiomegaly", ["No effusion;", "mild cardiomegaly"]),
        ("1. Clear lungs.\n2. No effusion.", ["Clear lungs.", "No effusion."]),
        ("No effusion.No pneumothorax.", ["No effusion.", "No pneumothorax."]),
        ("Heart normal\nLungs clear", ["Heart normal", "Lungs clear"]),
        ("Pneumonia? Follow up.", ["Pneumonia?", "Follow up."]),
        ("Measures 1.2 x 3.4 cm.", ["Measures 1.2 x 3.4 cm."]),
        (". . 2.", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


# --------------------------------------------------------------------------- model text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Clear lung XXXX bilaterally.", "Clear lung bilaterally."),
        ("Chest radiograph on XXXX.", "Chest radiograph on."),
        ("XXXX yr old female with dyspnea.", "yr old female with dyspnea."),
        ("No acute process. .", "No acute process."),
        ("Discussed with Dr. ___ at ___.", "Discussed with Dr. at."),
        ("Compared with xxxx-xxxx films.", "Compared with films."),
        ("Seen on [DATE] by [NAME] ( [ID] ).", "Seen on by."),
        ("A 2.5 cm nodule, stable.  No  effusion!", "A 2.5 cm nodule, stable. No effusion!"),
        ("Rib X-ray; T10 fracture.", "Rib X-ray; T10 fracture."),
    ],
)
def test_clean_model_text(text: str, expected: str) -> None:
    assert clean_model_text(text) == expected
    assert clean_model_text(expected) == expected
