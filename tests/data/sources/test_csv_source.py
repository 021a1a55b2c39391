"""Generic CSV adapter: DICOM and PNG rows, study grouping, masks, labels, failures."""

from __future__ import annotations

import pytest

from medvl.data.sources.csv_source import load_csv
from medvl.findings import CARDIOMEGALY, PLEURAL_EFFUSION


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
    assert set(by_id) == {"st1", "st2"}
    first = by_id["st1"]
    assert [im.image_id for im in first.images] == ["a", "b"]
    assert [im.view_position for im in first.images] == ["AP", "LL"]  # header, then CSV
    assert first.sections == {"findings": "Enlarged heart.", "impression": "Cardiomegaly."}
    assert first.labels == {CARDIOMEGALY: 1, PLEURAL_EFFUSION: None}
    assert first.images[0].patient_key == first.patient_key != "pt1"
    assert by_id["st2"].labels == {CARDIOMEGALY: None, PLEURAL_EFFUSION: 1}
    assert by_id["st2"].images[0].view_position == "PA"
    assert by_id["st2"].images[0].rows == 24
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
    assert [s.study_id for s in result.studies] == ["pairs-2", "pairs-3", "pairs-4", "pairs-6"]
    assert result.seg_samples == []  # no mask column named
    assert len({s.patient_key for s in result.studies}) == 4


def test_missing_image_column(csv_file) -> None:
    with pytest.raises(ValueError, match="no image column 'path'"):
        load_csv(csv_file, image_col="path")
