"""Radiology report text: sections, the Indiana University XML format, and model-ready text.

Reports arrive as free text with headings ("FINDINGS:", "Impression -", "IMPRESSION" alone on a
line, "Clinical history:") or, for the Indiana University / Open-i collection, as XML with one
``<AbstractText Label="FINDINGS">`` element per section. Both become a ``dict`` keyed by the
canonical names in :data:`SECTION_NAMES`, so the labeler and the text towers see one shape.

Keys of the returned dicts:

* the five canonical sections, present only when the report has non-empty text for them;
* ``"preamble"``: text before the first heading (e.g. an exam title), when there is any;
* ``"other"``: text under a heading we do not map (``NOTIFICATION:``, ``RECOMMENDATION:``), so it
  does not leak into the preceding section.

Section text keeps the report's words, de-identification tokens included; call
:func:`clean_model_text` for the text a model should see.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

SECTION_NAMES: tuple[str, ...] = ("comparison", "indication", "technique", "findings", "impression")
PREAMBLE = "preamble"
OTHER = "other"

# Heading spellings (lower case, single spaces) -> canonical section.
HEADING_ALIASES: dict[str, str] = {
    "comparison": "comparison",
    "comparisons": "comparison",
    "comparison study": "comparison",
    "comparison studies": "comparison",
    "comparison exam": "comparison",
    "prior": "comparison",
    "prior studies": "comparison",
    "prior study": "comparison",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "history": "indication",
    "clinical history": "indication",
    "medical history": "indication",
    "reason": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "reason for request": "indication",
    "clinical information": "indication",
    "clinical details": "indication",
    "technique": "technique",
    "techniques": "technique",
    "procedure": "technique",
    "examination": "technique",
    "exam": "technique",
    "views": "technique",
    "findings": "findings",
    "finding": "findings",
    "report": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "opinion": "impression",
    "diagnosis": "impression",
}

_ALIAS_ALTERNATION = "|".join(
    re.escape(alias).replace(r"\ ", r"\s+")
    for alias in sorted(HEADING_ALIASES, key=len, reverse=True)
)
# A known heading: at a line start or after a sentence end, followed by ":", a dash, or the end of
# its line (a heading standing alone on a line).
_KNOWN_HEADING = re.compile(
    rf"(?:^|(?<=\n)|(?<=[.;]\s)|(?<=[.;]\s\s))[ \t]*(?P<name>{_ALIAS_ALTERNATION})"
    r"[ \t]*(?:(?::|\s[-\u2013\u2014]|[-\u2013\u2014]\s)[ \t]*|(?=\r?\n|$))",
    re.IGNORECASE,
)
# An unknown heading: an upper-case phrase at a line start followed by a colon ("WET READ:").
_OTHER_HEADING = re.compile(r"(?m)^[ \t]*(?P<name>[A-Z][A-Z /&]{2,40}):[ \t]*")

_DEID_TOKEN = re.compile(
    r"\b[Xx]{3,}(?:[-/][Xx]{3,})*\b|_{2,}|\[(?:DATE|TIME|NAME|MRN|ID|PHONE|ACCESSION|EMAIL)\]"
)
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?)])")
_REPEATED_PUNCT = re.compile(r"([.,;:])(?:\s*[.,;:])+")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_WHITESPACE = re.compile(r"\s+")


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _heading_matches(text: str) -> list[tuple[int, int, str]]:
    """Return ``(start, end, section)`` for every heading, in text order."""
    found: dict[int, tuple[int, int, str]] = {}
    for match in _KNOWN_HEADING.finditer(text):
        alias = _collapse(match.group("name")).lower()
        found[match.start("name")] = (match.start("name"), match.end(), HEADING_ALIASES[alias])
    for match in _OTHER_HEADING.finditer(text):
        start = match.start("name")
        if not any(s <= start < e for s, e, _ in found.values()):
            found[start] = (start, match.end(), OTHER)
    return [found[k] for k in sorted(found)]


def split_sections(text: str) -> dict[str, str]:
    """Split free-text report into canonical sections.

    Parameters
    ----------
    text
        A report with headings in any common style: ``FINDINGS:``, ``Impression -``,
        ``IMPRESSION`` alone on its line, ``Clinical history:`` (-> ``indication``), upper or
        lower case. Headings are recognised at a line start or right after a sentence end.

    Returns
    -------
    dict
        Canonical section -> whitespace-collapsed text. Missing or empty sections are absent;
        text before the first heading is under ``"preamble"``; text under unmapped upper-case
        headings is under ``"other"``. A repeated section is joined with a space.
    """
    sections: dict[str, str] = {}

    def add(name: str, chunk: str) -> None:
        chunk = _collapse(chunk)
        if chunk:
            sections[name] = f"{sections[name]} {chunk}" if name in sections else chunk

    headings = _heading_matches(text)
    add(PREAMBLE, text[: headings[0][0]] if headings else text)
    for i, (_, body_start, name) in enumerate(headings):
        body_end = headings[i + 1][0] if i + 1 < len(headings) else len(text)
        add(name, text[body_start:body_end])
    return sections


@dataclass
class IUReport:
    """One Indiana University (Open-i) chest X-ray report parsed from its XML.

    ``mesh_major`` holds the radiologist-assigned MeSH terms (e.g. ``"Cardiomegaly/mild"``,
    ``"normal"``); ``mesh_automatic`` those assigned by NLM's indexer.
    """

    report_id: str
    sections: dict[str, str]
    mesh_major: list[str] = field(default_factory=list)
    mesh_automatic: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)


def _parse_xml(xml: str | bytes) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as err:
        raise ValueError(f"report XML is not well-formed: {err}") from None


def _sections_from_root(root: ET.Element) -> dict[str, str]:
    sections: dict[str, str] = {}
    for node in root.iter("AbstractText"):
        label = _collapse(node.get("Label", "")).lower()
        name = HEADING_ALIASES.get(label, OTHER)
        body = _collapse("".join(node.itertext()))
        if body:
            sections[name] = f"{sections[name]} {body}" if name in sections else body
    return sections


def sections_from_iu_xml(xml: str | bytes) -> dict[str, str]:
    """Sections of an Indiana University / Open-i report XML.

    Each ``<AbstractText Label="...">`` becomes one entry under its canonical name (labels we do
    not map go to ``"other"``); empty elements are absent.

    Raises
    ------
    ValueError
        If ``xml`` is not well-formed XML.
    """
    return _sections_from_root(_parse_xml(xml))


def parse_iu_report(xml: str | bytes) -> IUReport:
    """Parse an Indiana University report XML: id, sections, MeSH terms and image ids.

    Raises
    ------
    ValueError
        If ``xml`` is not well-formed XML.
    """
    root = _parse_xml(xml)
    uid = root.find("uId")
    report_id = uid.get("id", "") if uid is not None else ""
    mesh = root.find("MeSH")
    major = [_collapse(n.text or "") for n in mesh.iter("major")] if mesh is not None else []
    auto = [_collapse(n.text or "") for n in mesh.iter("automatic")] if mesh is not None else []
    images = [n.get("id", "") for n in root.iter("parentImage") if n.get("id")]
    return IUReport(
        report_id=report_id,
        sections=_sections_from_root(root),
        mesh_major=[m for m in major if m],
        mesh_automatic=[m for m in auto if m],
        image_ids=images,
    )


def clean_model_text(text: str) -> str:
    """Text a text tower should see: de-identification tokens out, whitespace collapsed.

    Drops ``XXXX`` / ``xxxx`` runs (Indiana University), ``___`` runs (MIMIC-CXR) and the
    placeholders written by :func:`medvl.io.deid.scrub_report_text` (``[DATE]``, ``[NAME]`` ...),
    then repairs the punctuation the removal leaves behind (``"on XXXX."`` -> ``"on."``,
    ``"lungs . ."`` -> ``"lungs."``). Sentence punctuation and letter case are kept.
    """
    text = _DEID_TOKEN.sub(" ", text)
    text = _EMPTY_BRACKETS.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", _collapse(text))
    text = _REPEATED_PUNCT.sub(r"\1", text)
    return _collapse(text).lstrip(".,;: ")


_ABBREVIATIONS = frozenset({"vs", "dr", "drs", "e.g", "i.e", "approx", "st", "mr", "mrs", "cf"})
_SENTENCE_END = re.compile(r"(?<=[.;!?])\s+|(?<=[a-z]{2}[.;])(?=[A-Z])|\n+")
_ENUMERATOR = re.compile(r"^\s*(?:\d{1,2}[.)](?!\d)|[-*\u2022])\s*")


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences on ``. ; ! ?`` and newlines.

    Decimals ("2.5 cm") and abbreviations ("vs.", "Dr.") do not end a sentence, a period glued
    to the next sentence ("effusion.No pneumothorax") does, and list enumerators ("1.", "2)")
    are dropped, as are fragments without a letter.
    """
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        head = text[start : match.start()]
        last_word = re.search(r"([A-Za-z.]+)[.]$", head.rstrip())
        abbreviation = last_word is not None and last_word.group(1).lower() in _ABBREVIATIONS
        if abbreviation and "\n" not in match.group():
            continue
        sentences.append(head)
        start = match.end()
    sentences.append(text[start:])
    cleaned = (_ENUMERATOR.sub("", s).strip() for s in sentences)
    return [s for s in cleaned if re.search(r"[A-Za-z]", s)]
