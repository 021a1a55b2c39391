"""Generic CSV adapter: DICOM and PNG rows, study grouping, masks, labels, failures."""

from __future__ import annotations

import pytest

from medvl.data.sources.csv_source import load_csv
from medvl.findings import CARDIOMEGALY, PLEURAL_EFFUSION
from medvl.io.dicom import hash_uid


def study_key(value: str) -> str:
    return hash_uid(value, salt="csv:study:")


@pytest.fixture
def csv_file(tmp_path, make_dicom, make_raster):
    make_dicom(tmp_path / "imgs" / "a.dcm", 16, 12, "PAT-A", view="AP")
    make_raster(tmp_path / "imgs" / "b.png")
    make_raster(tmp_path / "imgs" / "c.png")
    make_raster(tmp_path / "masks" / "a.png", (12, 16))
    path = tmp_path / "pairs.csv"
    path.write_text(
        "image,report,study,patient,view,mask,Cardiomegaly,Pleural Effusion\n"
        'imgs/a.dcm,"FINDINGS: Enlarged heart. IMPRESSION: Cardiomegaly.",'
        "st1,pt1,,masks/a.png,1.0,\n"
        "imgs/b.png,ignored second report,st1,pt1,LL,,0,\n"
        "imgs/c.png,IMPRESSION: Small left effusion.,st2,pt2,pa,,,1\n"
        "imgs/missing.png,text,st3,pt3,,,,\n"
        "imgs/c.png,text,st4,pt4,,masks/nope.png,,\n"
        "imgs/c.png,text,st5,pt5,,,2.0,\n"
        ",text,st6,pt6,,,,\n"
    )
    return path


def test_reads_rows_into_studies(csv_file) -> None:
    result = load_csv(
        csv_file, study_col="study", patient_col="patient", view_col="view", mask_col="mask"
    )
    by_id = {s.study_id: s for s in result.studies}
    assert set(by_id) == {study_key("st1"), study_key("st2")}
    first = by_id[study_key("st1")]
    paths = [str(csv_file.parent / "imgs" / n) for n in ("a.dcm", "b.png")]
    assert [im.image_id for im in first.images] == [hash_uid(p, salt="csv:image:") for p in paths]
    assert [im.view_position for im in first.images] == ["AP", "LL"]  # header, then CSV
    assert first.sections == {"findings": "Enlarged heart.", "impression": "Cardiomegaly."}
    assert first.labels == {CARDIOMEGALY: 1, PLEURAL_EFFUSION: None}
    assert first.images[0].patient_key == first.patient_key != "pt1"
    second = by_id[study_key("st2")]
    assert second.labels == {CARDIOMEGALY: None, PLEURAL_EFFUSION: 1}
    assert second.images[0].view_position == "PA"
    assert second.images[0].rows == 24
    [sample] = result.seg_samples
    assert sample.structure == "lesion" and sample.mask_path.endswith("masks/a.png")
    assert sample.pixel_spacing == (0.2, 0.2) and sample.split == first.split
    assert first.images[0].masks == {"lesion": sample.mask_path}
    reasons = [f.reason for f in result.failures]
    assert len(reasons) == 4
    assert any("not a readable image" in r for r in reasons)
    assert any("mask file not found" in r for r in reasons)
    assert any("'2.0'" in r for r in reasons)
    assert any("no image path" in r for r in reasons)


def test_every_row_is_a_study_without_study_column(csv_file) -> None:
    result = load_csv(csv_file)
    expected = [study_key(f"pairs-{row}") for row in (2, 3, 4, 6)]
    assert [s.study_id for s in result.studies] == expected
    assert result.seg_samples == []  # no mask column named
    assert len({s.patient_key for s in result.studies}) == 4


def test_missing_image_column(csv_file) -> None:
    with pytest.raises(ValueError, match="no image column 'path'"):
        load_csv(csv_file, image_col="path")


def test_report_text_is_scrubbed_unless_the_corpus_is_de_identified(tmp_path, make_raster) -> None:
    make_raster(tmp_path / "Doe_Jane_19400101" / "img.png")
    path = tmp_path / "reports.csv"
    path.write_text(
        "image,report,study\n"
        'Doe_Jane_19400101/img.png,"IMPRESSION: No effusion. Reviewed for Jane Doe '
        '(MRN 4455667) on 03/04/2021.",ACC-991122\n'
    )
    [study] = load_csv(path, study_col="study").studies
    record = str([study.study_id, study.report_text, study.sections, study.images[0].image_id])
    for secret in ("Jane", "Doe", "4455667", "03/04/2021", "ACC-991122", "19400101"):
        assert secret not in record
    assert study.sections["impression"].startswith("No effusion. Reviewed for [NAME]")
    [kept] = load_csv(path, study_col="study", scrub_reports=False).studies
    assert "Jane Doe" in kept.report_text
