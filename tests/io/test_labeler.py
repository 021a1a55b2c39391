"""The CheXpert-14 labeler: API, No Finding, aggregation, sections, rules files, IU agreement.

The per-rule sentence set is in ``test_labeler_sentences.py``.
"""

from __future__ import annotations

import importlib.util
import re
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvl.config import ConfigError
from medvl.findings import (
    ATELECTASIS,
    CARDIOMEGALY,
    CHEXPERT_14,
    NO_FINDING,
    PLEURAL_EFFUSION,
    PNEUMONIA,
    PNEUMOTHORAX,
)
from medvl.io.labeler import LabelerRules, ReportLabeler, label_report
from medvl.io.reports import IUReport, parse_iu_report

CM, EFF, PTX, PNA, ATEL = CARDIOMEGALY, PLEURAL_EFFUSION, PNEUMOTHORAX, PNEUMONIA, ATELECTASIS


@pytest.fixture(scope="module")
def labeler() -> ReportLabeler:
    return ReportLabeler()


def mentioned(labels: dict[str, int | None]) -> dict[str, int]:
    """Every labelled finding except the derived No Finding."""
    return {k: v for k, v in labels.items() if v is not None and k != NO_FINDING}


def test_every_chexpert_name_is_returned(labeler: ReportLabeler) -> None:
    labels = labeler.label("No pneumothorax.")
    assert list(labels) == list(CHEXPERT_14)
    assert labels[PTX] == 0 and labels[EFF] is None


# --------------------------------------------------------------------------- No Finding


@pytest.mark.parametrize(
    ("text", "no_finding"),
    [
        ("Lungs are clear. No effusion or pneumothorax.", 1),
        ("No acute cardiopulmonary process.", 1),
        ("", 1),
        ("Right PICC line tip in the SVC. No acute disease.", 1),
        ("Possible small left effusion.", 0),
        ("Cardiomegaly.", 0),
        ("Old healed rib fracture.", 0),
    ],
)
def test_no_finding(labeler: ReportLabeler, text: str, no_finding: int) -> None:
    assert labeler.label(text)[NO_FINDING] == no_finding


# --------------------------------------------------------------------------- aggregation


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Small left effusion. No right effusion.", 1),
        ("No right effusion. Small left effusion.", 1),
        ("Possible effusion. No effusion on the right.", -1),
        ("Pleural effusion. Possible pleural effusion.", 1),
        ("No effusion. The costophrenic angles are sharp.", 0),
    ],
)
def test_present_beats_uncertain_beats_negated(
    labeler: ReportLabeler, text: str, value: int
) -> None:
    assert labeler.label(text)[EFF] == value


# --------------------------------------------------------------------------- sections


def test_indication_is_not_labelled_by_default(labeler: ReportLabeler) -> None:
    report = (
        "INDICATION: rule out pneumonia.\nFINDINGS: The lungs are clear.\n"
        "IMPRESSION: No acute disease."
    )
    assert labeler.label(report)[PNA] == 0
    assert labeler.label(report, sections=None)[PNA] == -1


def test_report_without_findings_or_impression_is_labelled_in_full(
    labeler: ReportLabeler,
) -> None:
    assert labeler.label("Small right effusion.")[EFF] == 1
    assert labeler.label("HISTORY: effusion?\nSmall right effusion.")[EFF] is None
    assert labeler.label("CHEST PA\nSmall right effusion.")[EFF] == 1


def test_label_sentences_explains_the_decision(labeler: ReportLabeler) -> None:
    items = labeler.label_sentences("No pneumothorax. Atelectasis versus pneumonia.")
    by_finding = {i.finding: i for i in items}
    assert by_finding[PTX].value == 0 and by_finding[PTX].cue == "No"
    assert by_finding[PTX].sentence == "No pneumothorax."
    assert by_finding[PNA].value == -1 and by_finding[PNA].cue == "versus"
    assert by_finding[ATEL].mention == "Atelectasis"


def test_label_report_uses_default_rules(labeler: ReportLabeler) -> None:
    text = "FINDINGS: Mild cardiomegaly. No effusion."
    assert label_report(text) == labeler.label(text)


# --------------------------------------------------------------------------- rules files


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_custom_rules_file(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """
macros:
  SIDE: '(?:left|right)'
cues:
  negation_pre: ['no']
  uncertainty_post: ['suspected']
findings:
  Pneumothorax:
    synonyms: ['{{SIDE}}\\s+collapsed\\s+lung', 'ptx']
""",
    )
    labeler = ReportLabeler.from_yaml(path)
    assert mentioned(labeler.label("Right collapsed lung.")) == {PTX: 1}
    assert mentioned(labeler.label("No ptx.")) == {PTX: 0}
    assert mentioned(labeler.label("Ptx suspected.")) == {PTX: -1}
    assert mentioned(labeler.label("Pneumothorax.")) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("findings:\n  Pneumothoraks:\n    synonyms: [ptx]\n", "Pneumothoraks"),
        ("findings:\n  No Finding:\n    synonyms: [normal]\n", "No Finding"),
        ("findings:\n  Pneumothorax:\n    synonym: [ptx]\n", "synonym"),
        ("findings:\n  Pneumothorax:\n    synonyms: ['(ptx']\n", "Pneumothorax.synonyms[0]"),
        ("findings:\n  Pneumothorax:\n    synonyms: ['{{NOPE}}']\n", "NOPE"),
        ("post_window: -1\n", "post_window"),
    ],
)
def test_bad_rules_file_is_rejected_by_name(tmp_path: Path, text: str, message: str) -> None:
    path = write_rules(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        ReportLabeler.from_yaml(path)


def test_default_rules_cover_every_observation() -> None:
    rules = LabelerRules.default()
    assert set(rules.findings) == set(CHEXPERT_14) - {NO_FINDING}
    assert all(rule.synonyms for rule in rules.findings.values())


# --------------------------------------------------------------------------- real IU reports


def iu_reports_archive() -> Path:
    """The Open-i report archive shipped inside torchxrayvision (located, not imported)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        pytest.skip("torchxrayvision is not installed; its IU report archive is the test corpus")
    path = Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the torchxrayvision install")
    return path


def read_iu_reports() -> list[IUReport]:
    with tarfile.open(iu_reports_archive()) as archive:
        return [
            parse_iu_report(archive.extractfile(member).read())  # type: ignore[union-attr]
            for member in archive
            if member.isfile() and member.name.endswith(".xml")
        ]


def agreement(truth: list[bool], predicted: list[bool]) -> tuple[float, float, float]:
    """Accuracy, Cohen's kappa and sensitivity of binary predictions."""
    n = len(truth)
    tp = sum(t and p for t, p in zip(truth, predicted, strict=True))
    fp = sum(p and not t for t, p in zip(truth, predicted, strict=True))
    fn = sum(t and not p for t, p in zip(truth, predicted, strict=True))
    tn = n - tp - fp - fn
    accuracy = (tp + tn) / n
    chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
    return accuracy, (accuracy - chance) / (1 - chance), tp / max(1, tp + fn)


@pytest.mark.slow
def test_agreement_with_iu_mesh_labels(labeler: ReportLabeler) -> None:
    """Labeler vs the radiologist-assigned MeSH terms of the 3,955 Indiana University reports."""
    reports = read_iu_reports()
    assert len(reports) == 3955
    labels = [labeler.label("\n".join(f"{k}: {v}" for k, v in r.sections.items())) for r in reports]
    for finding, mesh_term in [(CM, CM), (EFF, "Pleural Effusion"), (PTX, "Pneumothorax")]:
        truth = [any(m.split("/")[0] == mesh_term for m in r.mesh_major) for r in reports]
        accuracy, kappa, sensitivity = agreement(truth, [lab[finding] == 1 for lab in labels])
        assert accuracy > 0.97 and kappa > 0.8 and sensitivity > 0.85, (finding, accuracy, kappa)
        # MeSH "Cardiomegaly/borderline" is what the labeler calls uncertain: with uncertain
        # counted as present, almost every MeSH-positive report is found.
        _, _, sensitivity = agreement(truth, [lab[finding] in (1, -1) for lab in labels])
        assert sensitivity > 0.95, (finding, sensitivity)
    normal = [r.mesh_major == ["normal"] for r in reports]
    _, _, sensitivity = agreement(normal, [lab[NO_FINDING] == 1 for lab in labels])
    assert sensitivity > 0.93


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                ["no", "not", "possible", "versus", "pneumothorax", "effusion", "heart", "is",
                 "enlarged", "normal", "lungs", "clear", ".", ",", ";", "?", "\n", "FINDINGS:",
                 "IMPRESSION -", "2.5", "cm", "XXXX", "may", "be", "cannot", "excluded"]
            ),
            st.text(max_size=5),
        ),
        max_size=30,
    ).map(" ".join)
)  # fmt: skip
def test_any_text_gets_a_complete_label_set(text: str) -> None:
    labels = label_report(text)
    assert list(labels) == list(CHEXPERT_14)
    assert all(v in (None, 1, 0, -1) for v in labels.values())
    assert labels[NO_FINDING] in (0, 1)


@pytest.mark.slow
def test_f1_against_iu_mesh_labels(labeler: ReportLabeler) -> None:
    """Issue 17's bar, as ``bench/labeler.py`` measures it: macro F1 >= 0.90, every finding >= 0.85.

    Findings + impression of the MeSH-indexed IU reports; truth through the packaged MeSH table,
    No Finding by CheXpert's definition; present means 1 on both sides.
    """
    from sklearn.metrics import f1_score

    from medvl.data.sources.iu.mesh import default_mapping

    iu_reports_archive()
    mapping = default_mapping()
    pairs = []
    for report in read_iu_reports():
        text = "\n".join(report.sections.get(s, "") for s in ("findings", "impression")).strip()
        truth = mapping.labels(report.mesh_major, no_finding="chexpert")
        if text and truth:
            pairs.append((truth, labeler.label(text, sections=None)))
    assert len(pairs) == 3832
    scored = [f for f in CHEXPERT_14 if f not in ("Enlarged Cardiomediastinum", "Pleural Other")]
    f1 = {f: f1_score([t[f] == 1 for t, _ in pairs], [p[f] == 1 for _, p in pairs]) for f in scored}
    assert sum(f1.values()) / len(f1) >= 0.90, f1
    assert min(f1.values()) >= 0.85, f1
