"""MeSH -> CheXpert-14 mapping: rule semantics, completeness and coverage on the real corpus."""

from __future__ import annotations

from collections import Counter

import pytest

from medvl.data.sources.iu.mesh import (
    MeshMapping,
    default_mapping,
    descriptor_counts,
    split_term,
)
from medvl.findings import (
    ATELECTASIS,
    CARDIOMEGALY,
    CHEXPERT_14,
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

# Mention phrases of the CheXpert labeler (stanfordmlgroup/chexpert-labeler, phrases/mention),
# an independent statement of which words name which finding. A MeSH descriptor containing
# one of them should map to that finding. Consolidation / Pneumonia / Atelectasis are found
# by their word stems; "_mediastinum" is the labeler's word-boundary form.
CHEXPERT_MENTIONS: dict[str, tuple[str, ...]] = {
    ATELECTASIS: ("atelecta", "collapse"),
    CARDIOMEGALY: ("cardiomegaly", "cardiac shadow", "enlarged heart", "cardiac enlargement"),
    EDEMA: ("edema", "heart failure", "vascular congestion", "pulmonary congestion"),
    ENLARGED_CARDIOMEDIASTINUM: ("mediastinum", "cardiomediastinum"),
    FRACTURE: ("fracture",),
    LUNG_LESION: ("mass", "nodule", "carcinoma", "neoplasm", "tumor"),
    LUNG_OPACITY: ("opaci", "airspace disease", "infiltrate", "infiltration", "reticulation"),
    PLEURAL_EFFUSION: ("effusion", "pleural fluid"),
    PLEURAL_OTHER: ("pleural thickening", "fibrothorax"),
    PNEUMONIA: ("pneumonia", "infection"),
    "Consolidation": ("consolidat",),
    PNEUMOTHORAX: ("pneumothorax", "pneumothoraces"),
    SUPPORT_DEVICES: ("catheter", "tube", "pacemaker", "device", "valve", "picc", "line"),
}


@pytest.fixture(scope="module")
def terms(iu_reports) -> list[list[str]]:
    reports, _ = iu_reports
    return [r.mesh_major for r in reports]


def test_split_term() -> None:
    assert split_term("Pleural Effusion/left/ small") == ("pleural effusion", ("left", "small"))
    assert split_term("normal") == ("normal", ())


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("Cardiomegaly/mild", {CARDIOMEGALY: 1}),
        ("Cardiomegaly/borderline", {CARDIOMEGALY: -1}),
        ("Cardiac Shadow/enlarged/severe", {CARDIOMEGALY: 1}),
        ("Cardiac Shadow/obscured", {}),
        ("Hydropneumothorax/right", {PNEUMOTHORAX: 1, PLEURAL_EFFUSION: 1}),
        ("Nodule/lung/upper lobe/right", {LUNG_LESION: 1}),
        ("Nodule/breast", {}),
        ("Opacity/lung/base/left", {LUNG_OPACITY: 1}),
        ("Opacity/ribs/left", {}),
        ("Thickening/pleura/apex", {PLEURAL_OTHER: 1}),
        ("Thickening/bronchovascular", {LUNG_OPACITY: 1}),
        ("Calcified Granuloma/lung/lingula", {}),
        ("Catheters, Indwelling/right", {SUPPORT_DEVICES: 1}),
        ("fractures, bone/ribs/left/healed", {FRACTURE: 1}),
        ("Pulmonary Congestion/mild", {EDEMA: 1}),
        ("Opacity/lung/base/left/round", {LUNG_OPACITY: 1, LUNG_LESION: 1}),
        ("Density/lung/middle lobe/right/round", {LUNG_OPACITY: 1, LUNG_LESION: 1}),
        ("Density/ribs/right/round", {}),
    ],
)
def test_rules(term: str, expected: dict[str, int]) -> None:
    assert default_mapping().findings_of(term) == expected


def test_report_labels() -> None:
    mapping = default_mapping()
    labels = mapping.labels(["Cardiomegaly/borderline", "Cardiac Shadow/enlarged", "Spine"])
    assert labels[CARDIOMEGALY] == 1  # positive wins over uncertain
    assert labels[NO_FINDING] == 0 and labels[EDEMA] == 0
    assert list(labels) == list(CHEXPERT_14)
    normal = mapping.labels(["normal"])
    assert normal[NO_FINDING] == 1 and sum(v for v in normal.values()) == 1
    open_world = mapping.labels(["Cardiomegaly"], closed_world=False)
    assert open_world[CARDIOMEGALY] == 1 and open_world[EDEMA] is None
    assert mapping.labels(["No Indexing"]) == {} and mapping.labels([]) == {}
    # No Finding by CheXpert's definition: no pathology but Support Devices; by MeSH: "normal" only
    spine = mapping.labels(["Spine/degenerative", "Catheters, Indwelling"], no_finding="chexpert")
    assert spine[NO_FINDING] == 1 and spine[SUPPORT_DEVICES] == 1
    assert mapping.labels(["Spine/degenerative"])[NO_FINDING] == 0
    assert mapping.labels(["Cardiomegaly/borderline"], no_finding="chexpert")[NO_FINDING] == 0


def test_every_frequent_descriptor_is_mapped_or_explained(terms) -> None:
    mapping = default_mapping()
    counts = descriptor_counts(terms)
    unmapped = Counter(split_term(t)[0] for ts in terms for t in ts if not mapping.is_mapped(t))
    special = mapping.normal_terms | mapping.unindexed_terms
    frequent = [d for d, n in counts.items() if n >= 20 and d not in special]
    assert len(frequent) == 52
    missing = [d for d in frequent if unmapped[d] and d not in mapping.unmapped]
    assert missing == []
    # every listed reason is used: no stale entries for descriptors the rules map in full
    stale = [d for d in mapping.unmapped if unmapped[d] == 0]
    assert stale == []


def test_coverage_of_chexpert_mentions(terms) -> None:
    """Occurrences whose descriptor names a CheXpert finding are mapped to that finding."""
    mapping = default_mapping()
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for report_terms in terms:
        for term in report_terms:
            descriptor = split_term(term)[0]
            for finding, phrases in CHEXPERT_MENTIONS.items():
                if any(p in descriptor for p in phrases):
                    totals[finding] += 1
                    hits[finding] += finding in mapping.findings_of(term)
    covered, total = sum(hits.values()), sum(totals.values())
    assert total == 2489  # measured; 2,451 of them are mapped (98.5 %)
    assert covered / total >= 0.95
    for finding, n in totals.items():
        if n >= 20:
            assert hits[finding] / n >= 0.8, finding


def test_mapped_share_of_all_occurrences(terms) -> None:
    mapping = default_mapping()
    occurrences = [t for ts in terms for t in ts]
    mapped = sum(mapping.is_mapped(t) for t in occurrences)
    assert (len(occurrences), mapped) == (8298, 2933)


@pytest.mark.slow
def test_mesh_labels_agree_with_text_labeler(iu_reports) -> None:
    """Where MeSH says a finding is present, the report text should mention it (pos. or unc.)."""
    from medvl.io.labeler import label_report

    reports, _ = iu_reports
    mapping = default_mapping()
    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for report in reports:
        mesh = mapping.labels(report.mesh_major)
        text = " ".join(report.sections.get(k, "") for k in ("findings", "impression"))
        text_labels = label_report(text) if mesh else {}
        for finding, value in mesh.items():
            if value == 1:
                total[finding] += 1
                agree[finding] += text_labels.get(finding) in (1, -1)
    assert sum(agree.values()) / sum(total.values()) >= 0.9
    for finding, n in total.items():
        if n >= 100:
            assert agree[finding] / n >= 0.8, finding


def test_mapping_validation() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        rule = {"term": "Catheters", "Indwelling": None, "findings": []}
        MeshMapping.from_dict({"rules": [rule]})
    with pytest.raises(ValueError, match="unknown findings"):
        MeshMapping.from_dict({"rules": [{"term": "Mass", "findings": ["Tumour"]}]})
    with pytest.raises(ValueError, match="value must be 1 or -1"):
        MeshMapping.from_dict({"rules": [{"term": "Mass", "findings": [LUNG_LESION], "value": 0}]})
    with pytest.raises(ValueError, match="need a reason"):
        MeshMapping.from_dict({"rules": [], "unmapped": {"Spine": " "}})


def test_user_mapping_file(tmp_path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("rules:\n  - {term: Calcified Granuloma, findings: [Lung Lesion]}\n")
    mapping = MeshMapping.load(path)
    assert mapping.findings_of("Calcified Granuloma/lung") == {LUNG_LESION: 1}
    assert mapping.labels(["Calcified Granuloma"])[NO_FINDING] == 0
