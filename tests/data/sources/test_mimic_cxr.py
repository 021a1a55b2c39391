"""MIMIC-CXR adapter on a fixture tree in the PhysioNet layout (DICOM + JPG, gzipped CSVs)."""

from __future__ import annotations

import gzip

import pytest

from medvl.data.sources.mimic_cxr import load_mimic
from medvl.findings import CARDIOMEGALY, CHEXPERT_14, EDEMA, NO_FINDING

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 FINDINGS:  The heart is mildly enlarged. Mild interstitial edema.

 IMPRESSION:  Cardiomegaly with mild edema.
"""


def _gz_csv(path, header: str, rows: list[str]) -> None:
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join([header, *rows]) + "\n")


def _label_row(study: str, labels: dict[str, str]) -> str:
    return ",".join(["10000032", study, *(labels.get(n, "") for n in CHEXPERT_14)])


@pytest.fixture
def mimic_root(tmp_path, make_dicom, make_raster):
    files = tmp_path / "files"
    s1 = files / "p10" / "p10000032" / "s50414267"
    make_dicom(s1 / "aaa.dcm", 16, 12, "10000032", view="PA")
    make_dicom(s1 / "bbb.dcm", 12, 16, "10000032", view="LL")
    s1.with_suffix(".txt").write_text(REPORT)
    s2 = files / "p10" / "p10000032" / "s53189527"
    make_raster(s2 / "ccc.jpg")
    s2.with_suffix(".txt").write_text("FINDINGS: Normal.\nIMPRESSION: No acute process.\n")
    make_raster(files / "p11" / "p11000011" / "s51111111" / "ddd.jpg")  # no report file
    empty = files / "p11" / "p11000011" / "s52222222"
    empty.mkdir(parents=True)
    (empty / "notes.md").write_text("not an image")
    empty.with_suffix(".txt").write_text("IMPRESSION: none")
    broken = files / "p12" / "p12000012" / "s53333333"
    broken.mkdir(parents=True)
    (broken / "eee.dcm").write_bytes(b"\x00" * 200)
    broken.with_suffix(".txt").write_text("IMPRESSION: none")
    header = "subject_id,study_id," + ",".join(CHEXPERT_14)
    _gz_csv(
        tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz",
        header,
        [
            _label_row("50414267", {CARDIOMEGALY: "1.0", EDEMA: "-1.0"}),
            _label_row("53189527", {NO_FINDING: "1.0"}),
            _label_row("59999999", {EDEMA: "x"}),
        ],
    )
    _gz_csv(
        tmp_path / "mimic-cxr-2.0.0-negbio.csv.gz",
        header,
        [_label_row("50414267", {CARDIOMEGALY: "1.0", EDEMA: "1.0"})],
    )
    _gz_csv(
        tmp_path / "mimic-cxr-2.0.0-split.csv.gz",
        "dicom_id,study_id,subject_id,split",
        ["aaa,50414267,10000032,test", "bbb,50414267,10000032,test",
         "ccc,53189527,10000032,validate"],
    )  # fmt: skip
    _gz_csv(
        tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz",
        "dicom_id,subject_id,study_id,ViewPosition,Rows,Columns",
        ["ccc,10000032,53189527,PA,24,20", "ddd,11000011,51111111,LATERAL,24,20"],
    )
    return tmp_path


def test_reads_studies_reports_labels_splits(mimic_root) -> None:
    result = load_mimic(mimic_root)
    by_id = {s.study_id: s for s in result.studies}
    assert set(by_id) == {"s50414267", "s53189527", "s51111111"}
    dicom_study = by_id["s50414267"]
    assert [im.view_position for im in dicom_study.images] == ["PA", "LL"]
    assert [im.image_id for im in dicom_study.images] == ["aaa", "bbb"]
    assert dicom_study.images[0].rows == 16 and dicom_study.images[0].sop_uid_hash
    assert dicom_study.labels[CARDIOMEGALY] == 1 and dicom_study.labels[EDEMA] == -1
    assert dicom_study.sections["findings"].startswith("The heart is mildly enlarged")
    assert dicom_study.sections["impression"] == "Cardiomegaly with mild edema."
    assert dicom_study.split == "test"
    jpg_study = by_id["s53189527"]
    assert jpg_study.split == "val" and jpg_study.images[0].view_position == "PA"
    assert jpg_study.labels[NO_FINDING] == 1
    assert jpg_study.patient_key == dicom_study.patient_key
    assert "10000032" not in dicom_study.patient_key
    orphan = by_id["s51111111"]
    assert orphan.report_text == "" and orphan.labels == {}
    assert orphan.images[0].view_position == "LATERAL"
    assert orphan.split in ("train", "val", "test")
    reasons = [f.reason for f in result.failures]
    assert any("'x'" in r for r in reasons)  # bad label cell
    assert sum("no readable image" in r for r in reasons) == 2  # empty + broken study
    assert any("no report" in r for r in reasons)
    assert any(f.path.endswith("eee.dcm") for f in result.failures)
    assert len(result.failures) == 5


def test_negbio_labels(mimic_root) -> None:
    result = load_mimic(mimic_root, label_file="negbio")
    study = next(s for s in result.studies if s.study_id == "s50414267")
    assert study.labels[EDEMA] == 1
    assert next(s for s in result.studies if s.study_id == "s53189527").labels == {}


def test_layout_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="files"):
        load_mimic(tmp_path)
    with pytest.raises(ValueError, match="label_file"):
        load_mimic(tmp_path, label_file="chexbert")  # type: ignore[arg-type]
