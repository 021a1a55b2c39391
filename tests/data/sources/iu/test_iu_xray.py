"""The real Indiana University reports (shipped with torchxrayvision) read into Studies.

The numbers asserted here were measured on the shipped ``NLMCXR_reports.tgz`` and
``nlmcxr_dicom_metadata.csv.gz``; they pin the parser and the mapping to the real corpus.
"""

from __future__ import annotations

import tarfile
from collections import Counter

import pytest

from medvl.data.records import split_of, study_pairs
from medvl.data.sources.assets import IU_REPORTS, asset_path
from medvl.data.sources.iu.mesh import descriptor_counts
from medvl.data.sources.iu.xray import load_iu, read_iu_reports, report_text
from medvl.findings import (
    CARDIOMEGALY,
    CHEXPERT_14,
    FRACTURE,
    LUNG_OPACITY,
    NO_FINDING,
    PLEURAL_EFFUSION,
    PNEUMOTHORAX,
    SUPPORT_DEVICES,
)


def test_every_report_parses(iu_reports) -> None:
    reports, result = iu_reports
    assert result.failures == []
    assert len(reports) == 3955
    assert len({r.report_id for r in reports}) == 3955
    assert sum(len(r.image_ids) for r in reports) == 7470
    per_report = Counter(len(r.image_ids) for r in reports)
    assert per_report == {2: 3208, 1: 446, 3: 181, 0: 104, 4: 15, 5: 1}
    assert [r.report_id for r in reports[:3]] == ["CXR1", "CXR2", "CXR3"]


def test_section_counts(iu_reports) -> None:
    reports, _ = iu_reports
    counts = Counter(name for r in reports for name in r.sections)
    assert counts == {"impression": 3921, "indication": 3865, "findings": 3425, "comparison": 3333}
    both = sum("findings" in r.sections and "impression" in r.sections for r in reports)
    neither = sum("findings" not in r.sections and "impression" not in r.sections for r in reports)
    assert (both, neither) == (3419, 28)


def test_mesh_counts(iu_reports) -> None:
    reports, _ = iu_reports
    descriptors = descriptor_counts(r.mesh_major for r in reports)
    assert sum(descriptors.values()) == 8298
    assert len(descriptors) == 119
    assert sum(n >= 20 for n in descriptors.values()) == 54
    assert descriptors.most_common(5) == [
        ("normal", 1391), ("lung", 568), ("opacity", 536), ("cardiomegaly", 375),
        ("pulmonary atelectasis", 347),
    ]  # fmt: skip
    assert descriptors["no indexing"] == 95
    assert sum(len(r.mesh_automatic) for r in reports) == 7047


def test_mesh_label_prevalence(iu_result) -> None:
    studies = iu_result.studies
    assert sum(not s.labels for s in studies) == 95  # "No Indexing": no labels at all
    labelled = [s for s in studies if s.labels]
    assert all(set(s.labels) == set(CHEXPERT_14) for s in labelled)
    positive = Counter(f for s in labelled for f, v in s.labels.items() if v == 1)
    uncertain = Counter(f for s in labelled for f, v in s.labels.items() if v == -1)
    assert positive[NO_FINDING] == 1391
    assert positive[CARDIOMEGALY] == 345 and uncertain[CARDIOMEGALY] == 51
    assert positive[LUNG_OPACITY] == 776
    assert positive[PLEURAL_EFFUSION] == 162 and uncertain[PLEURAL_EFFUSION] == 1
    assert positive[PNEUMOTHORAX] == 27
    assert positive[SUPPORT_DEVICES] == 291
    assert positive[FRACTURE] == 84
    # closed world: an indexed report has no None labels
    assert all(v is not None for s in labelled for v in s.labels.values())


def test_studies_records(iu_result) -> None:
    studies = {s.study_id: s for s in iu_result.studies}
    assert len(studies) == 3955
    cxr1 = studies["CXR1"]
    assert cxr1.mesh == ["normal"] and cxr1.labels[NO_FINDING] == 1
    assert cxr1.patient_key == "iu-CXR1" and cxr1.source == "iu_xray"
    assert cxr1.report_text.startswith("COMPARISON: None.\nINDICATION: Positive TB test\nFINDINGS:")
    assert cxr1.model_text.startswith("The cardiac silhouette and mediastinum size")
    assert cxr1.model_text.endswith("pneumothorax. Normal chest x-XXXX.")
    # CXR1's XML spells its image ids CXR1_1_IM-...; the header table CXR1_IM-...
    assert [(im.image_id, im.rows, im.photometric) for im in cxr1.images] == [
        ("CXR1_1_IM-0001-3001", 2828, "MONOCHROME1"),
        ("CXR1_1_IM-0001-4001", 2320, "MONOCHROME1"),
    ]
    assert [f.path for f in iu_result.failures] == ["CXR1000_IM-0003-1001"]
    cxr1000 = studies["CXR1000"]
    assert cxr1000.images[0].view_position == "PA"  # no header row: the t-SNE call fills in
    assert cxr1000.images[0].rows == 0


def test_view_positions(iu_result) -> None:
    views = Counter(im.view_position for s in iu_result.studies for im in s.images)
    assert views == {"PA": 4539, "": 1204, "LL": 717, "LATERAL": 576, "AP": 405, "RL": 29}
    frontal = study_pairs(iu_result.studies)
    assert len(frontal) == 4539 + 405
    assert len({p.study_id for p in frontal}) == 3634


def test_splits_are_deterministic_and_patient_level(iu_result) -> None:
    splits = Counter(s.split for s in iu_result.studies)
    assert splits == {"train": 3198, "val": 391, "test": 366}
    assert all(s.split == split_of(s.patient_key, seed=0) for s in iu_result.studies)
    other = load_iu(view_source="header", seed=1)
    assert [s.study_id for s in other.studies] == [s.study_id for s in iu_result.studies]
    moved = sum(a.split != b.split for a, b in zip(iu_result.studies, other.studies, strict=True))
    assert 300 < moved < 1500
    header_views = Counter(im.view_position for s in other.studies for im in s.images)
    # the header table's own counts (CXR1's two images resolved through the id alias)
    assert header_views == {"PA": 3593, "": 2587, "LL": 717, "AP": 423, "LATERAL": 121, "RL": 29}


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory):
    """Ten real report XMLs unpacked into a folder, plus one broken XML."""
    folder = tmp_path_factory.mktemp("ecgen")
    with tarfile.open(asset_path(IU_REPORTS)) as archive:
        for number in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10):
            member = archive.getmember(f"ecgen-radiology/{number}.xml")
            (folder / f"{number}.xml").write_bytes(archive.extractfile(member).read())
    (folder / "broken.xml").write_text("<eCitation><uId id='CXR99'>")
    return folder


def test_reports_from_folder_and_labeler_labels(report_folder, tmp_path) -> None:
    (tmp_path / "CXR2_IM-0652-1001.png").write_bytes(b"png")
    result = load_iu(report_folder, label_source="labeler", image_root=tmp_path)
    assert [s.study_id for s in result.studies] == [f"CXR{n}" for n in range(1, 11)]
    assert any("not well-formed" in f.reason for f in result.failures)
    cxr1 = result.studies[0]
    assert cxr1.labels[PNEUMOTHORAX] == 0  # "There is no evidence of pneumothorax."
    assert set(cxr1.labels) <= set(CHEXPERT_14)
    cxr2 = result.studies[1]
    assert cxr2.images[0].path == str(tmp_path / "CXR2_IM-0652-1001.png")
    assert cxr2.images[1].path == ""


def test_report_text_and_bad_options() -> None:
    text = report_text({"impression": "Clear.", "findings": "Normal heart.", "preamble": "CHEST"})
    assert text == "CHEST\nFINDINGS: Normal heart.\nIMPRESSION: Clear."
    with pytest.raises(ValueError, match="label_source"):
        load_iu(label_source="chexbert")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="view_source"):
        load_iu(view_source="guess")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        read_iu_reports("/nonexistent/NLMCXR_reports.tgz")
