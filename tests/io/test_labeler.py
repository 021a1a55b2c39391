"""Rule-based CheXpert-14 labeler: negation, scope, uncertainty, synonyms, IU phrasing."""

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
    CONSOLIDATION,
    EDEMA,
    ENLARGED_CARDIOMEDIASTINUM,
    FRACTURE,
    LUNG_LESION,
    LUNG_OPACITY,
    NO_FINDING,
    PLEURAL_EFFUSION,
    PLEURAL_OTHER,
    PNEUMONIA,
    PNEUMOTHORAX,
    SUPPORT_DEVICES,
)
from medvl.io.labeler import LabelerRules, ReportLabeler, label_report
from medvl.io.reports import IUReport, parse_iu_report

CM, ECM, EFF, PTX = CARDIOMEGALY, ENLARGED_CARDIOMEDIASTINUM, PLEURAL_EFFUSION, PNEUMOTHORAX
OPAC, CONS, PNA, ATEL = LUNG_OPACITY, CONSOLIDATION, PNEUMONIA, ATELECTASIS
CLEAR_LUNGS = {OPAC: 0, EDEMA: 0, CONS: 0, PNA: 0}


@pytest.fixture(scope="module")
def labeler() -> ReportLabeler:
    return ReportLabeler()


def mentioned(labels: dict[str, int | None]) -> dict[str, int]:
    """Every labelled finding except the derived No Finding."""
    return {k: v for k, v in labels.items() if v is not None and k != NO_FINDING}


# (sentence, every finding it mentions -> expected value); unmentioned findings must be None.
CASES: list[tuple[str, dict[str, int]]] = [
    # negation
    ("No pneumothorax.", {PTX: 0}),
    ("There is no pleural effusion.", {EFF: 0}),
    ("Without focal consolidation.", {CONS: 0}),
    ("Negative for pneumonia.", {PNA: 0}),
    ("The hila are free of infiltrates.", {OPAC: 0}),
    ("No evidence of pulmonary edema.", {EDEMA: 0}),
    ("The previously seen pneumothorax has resolved.", {PTX: 0}),
    ("Resolved right pleural effusion.", {EFF: 0}),
    ("Atelectasis rather than pneumonia.", {ATEL: 1, PNA: 0}),
    ("The heart is not enlarged.", {CM: 0}),
    ("Absence of pneumothorax is confirmed.", {PTX: 0}),
    ("Pneumothorax is not seen.", {PTX: 0}),
    ("Pleural effusions are absent.", {EFF: 0}),
    ("Interval removal of the endotracheal tube.", {SUPPORT_DEVICES: 0}),
    ("Lungs are clear of focal consolidation.", CLEAR_LUNGS),
    # negation scope
    ("No pneumothorax or pleural effusion.", {PTX: 0, EFF: 0}),
    ("No focal consolidation, pleural effusion, or pneumothorax.", {CONS: 0, EFF: 0, PTX: 0}),
    ("No pneumothorax, but there is a small left pleural effusion.", {PTX: 0, EFF: 1}),
    ("No pleural effusion, however mild cardiomegaly is present.", {EFF: 0, CM: 1}),
    ("There is no effusion and the heart is enlarged.", {EFF: 0, CM: 1}),
    (
        "No focal consolidation, although atelectasis is present at the left base.",
        {CONS: 0, ATEL: 1},
    ),  # fmt: skip
    ("Without pneumothorax, with small bilateral effusions.", {PTX: 0, EFF: 1}),
    ("No pneumothorax is seen and there is right lower lobe consolidation.", {PTX: 0, CONS: 1}),
    ("No pleural effusion is identified, pneumothorax is present.", {EFF: 0, PTX: 1}),
    # uncertainty
    ("Possible right lower lobe pneumonia.", {PNA: -1}),
    ("Pneumonia cannot be excluded.", {PNA: -1}),
    ("Cannot exclude a small pneumothorax.", {PTX: -1}),
    ("Findings are suggestive of pulmonary edema.", {EDEMA: -1}),
    ("Left basilar opacity, likely atelectasis.", {OPAC: 1, ATEL: -1}),
    ("Atelectasis versus pneumonia in the right base.", {ATEL: -1, PNA: -1}),
    ("Atelectasis vs. consolidation.", {ATEL: -1, CONS: -1}),
    ("Questionable small left effusion.", {EFF: -1}),
    ("This may represent early pneumonia.", {PNA: -1}),
    ("Small pleural effusion may be present.", {EFF: -1}),
    ("Probable small right pneumothorax.", {PTX: -1}),
    ("Opacity concerning for pneumonia.", {OPAC: 1, PNA: -1}),
    ("Pneumonia?", {PNA: -1}),
    ("Pneumothorax is not entirely excluded.", {PTX: -1}),
    ("No pneumothorax, possible small left effusion.", {PTX: 0, EFF: -1}),
    ("May represent atelectasis, no effusion.", {ATEL: -1, EFF: 0}),
    ("Malignancy cannot be confidently excluded.", {LUNG_LESION: -1}),
    # pseudo-negation and pseudo-uncertainty
    ("No change in the small left pleural effusion.", {EFF: 1}),
    ("There is no focal air space opacity to suggest pneumonia.", {OPAC: 0, PNA: 0}),
    ("Right upper lobe nodule, not well seen on the prior study.", {LUNG_LESION: 1}),
    ("No significant interval change in bibasilar atelectasis.", {ATEL: 1}),
    # synonyms and exclusions
    ("Enlarged cardiac silhouette.", {CM: 1}),
    ("Cardiomegaly.", {CM: 1}),
    ("The heart size is mildly enlarged.", {CM: 1}),
    ("Widened mediastinum.", {ECM: 1}),
    ("Right upper lobe mass.", {LUNG_LESION: 1}),
    ("Mass effect on the trachea.", {}),
    ("Patchy airspace disease in the right lower lobe.", {OPAC: 1}),
    ("Pulmonary vascular congestion.", {EDEMA: 1}),
    ("Bibasilar subsegmental atelectasis.", {ATEL: 1}),
    ("Right basilar consolidation.", {CONS: 1}),
    ("Left hydropneumothorax.", {PTX: 1}),
    ("Pleural thickening at the right apex.", {PLEURAL_OTHER: 1}),
    ("Healed left rib fractures.", {FRACTURE: 1}),
    ("Right internal jugular central venous catheter tip in the SVC.", {SUPPORT_DEVICES: 1}),
    ("Left-sided pacemaker with leads in the right ventricle.", {SUPPORT_DEVICES: 1}),
    ("Soft tissue edema of the chest wall.", {}),
    ("Small pericardial effusion.", {}),
    ("Nodular densities consistent with chronic granulomatous disease.", {}),
    # several findings in one sentence
    (
        "Cardiomegaly with small bilateral pleural effusions and bibasilar atelectasis.",
        {CM: 1, EFF: 1, ATEL: 1},
    ),  # fmt: skip
    (
        "Mild pulmonary edema and bilateral effusions, no pneumothorax.",
        {EDEMA: 1, EFF: 1, PTX: 0},
    ),  # fmt: skip
    (
        "Stable cardiomegaly, pulmonary vascular congestion, and small right effusion.",
        {CM: 1, EDEMA: 1, EFF: 1},
    ),  # fmt: skip
    # Indiana University phrasing
    ("The heart is normal in size.", {CM: 0}),
    ("Heart size is upper limits of normal.", {CM: -1}),
    ("The heart is top normal in size.", {CM: -1}),
    ("Borderline cardiomegaly.", {CM: -1}),
    ("The lungs are clear.", CLEAR_LUNGS),
    ("Clear lung XXXX bilaterally.", CLEAR_LUNGS),
    ("The cardiomediastinal silhouette is within normal limits.", {ECM: 0, CM: 0}),
    ("Normal heart size and mediastinal contours.", {CM: 0, ECM: 0}),
    ("The heart, pulmonary XXXX and mediastinum are within normal limits.", {CM: 0, ECM: 0}),
    ("Heart size and pulmonary vascularity appear within normal limits.", {CM: 0, EDEMA: 0}),
    ("No acute bony abnormality.", {FRACTURE: 0}),
    (
        "Visualized osseous structures of the thorax are without acute abnormality.",
        {FRACTURE: 0},
    ),  # fmt: skip
    ("Costophrenic angles are sharp.", {EFF: 0}),
    ("Blunting of the left costophrenic angle.", {EFF: -1}),
    ("No blunting of the costophrenic angles.", {EFF: 0}),
    ("No acute cardiopulmonary abnormality.", {}),
    ("Calcified granuloma in the right upper lobe.", {}),
    ("Heart size is normal, the lungs are clear.", {CM: 0, **CLEAR_LUNGS}),
    # decimals do not split sentences
    ("A 2.5 cm nodule in the left upper lobe. No pneumothorax.", {LUNG_LESION: 1, PTX: 0}),
    ("Measuring 1.2 x 3.4 cm, there is a right hilar mass.", {LUNG_LESION: 1}),
    ("The 0.5 cm nodule is unchanged. No effusion.", {LUNG_LESION: 1, EFF: 0}),
]


def test_case_count() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize(("sentence", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_sentence_labels(labeler: ReportLabeler, sentence: str, expected: dict[str, int]) -> None:
    assert mentioned(labeler.label(sentence)) == expected


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
