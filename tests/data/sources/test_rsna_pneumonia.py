"""RSNA Pneumonia adapter: the real shipped labels file, box masks, and a fixture tree."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medvl.data.sources.assets import RSNA_LABELS, asset_path
from medvl.data.sources.rsna_pneumonia import Box, box_mask, load_rsna, read_box_table
from medvl.findings import LUNG_OPACITY, NO_FINDING, PNEUMONIA


def test_real_labels_file_counts() -> None:
    table, problems = read_box_table(asset_path(RSNA_LABELS))
    assert problems == []
    assert len(table) == 26684
    assert sum(1 for boxes in table.values() if boxes) == 6012
    assert sum(len(boxes) for boxes in table.values()) == 9555
    assert max(len(boxes) for boxes in table.values()) == 4


def test_box_mask_clips_and_unions() -> None:
    mask = box_mask([Box(1.5, 2.0, 2.0, 3.0), Box(8, 8, 10, 10), Box(-3, -3, 2, 2)], (10, 10))
    expected = np.zeros((10, 10), bool)
    expected[2:5, 1:4] = True  # (1.5 .. 3.5) covers columns 1-3
    expected[8:, 8:] = True
    np.testing.assert_array_equal(mask, expected)


def test_adapter_on_fixture_tree(tmp_path, make_dicom) -> None:
    root = tmp_path / "rsna"
    images = root / "stage_2_train_images"
    make_dicom(images / "pos-1.dcm", 20, 16, "pos-1")
    make_dicom(images / "neg-1.dcm", 20, 16, "neg-1")
    make_dicom(images / "unlabelled.dcm", 20, 16, "unlabelled")
    (root / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\n"
        "pos-1,2,3,4,5,1\n"
        "pos-1,10,12,3,3,1\n"
        "neg-1,,,,,0\n"
        "missing-1,,,,,0\n"
        "bad-1,,,,,1\n"
        "bad-2,1,1,1,1,7\n"
    )
    (root / "stage_2_detailed_class_info.csv").write_text(
        "patientId,class\npos-1,Lung Opacity\nneg-1,Normal\n"
    )
    result = load_rsna(root, tmp_path / "out")
    by_id = {s.study_id: s for s in result.studies}
    assert set(by_id) == {"pos-1", "neg-1"}
    assert by_id["pos-1"].labels == {LUNG_OPACITY: 1, PNEUMONIA: 1, NO_FINDING: 0}
    assert by_id["neg-1"].labels == {LUNG_OPACITY: 0, PNEUMONIA: 0, NO_FINDING: 1}
    assert by_id["pos-1"].images[0].rows == 20
    sample = next(s for s in result.seg_samples if s.image_id == "pos-1")
    mask = np.asarray(Image.open(sample.mask_path)) > 0
    assert mask.shape == (20, 16)
    assert mask.sum() == 4 * 5 + 3 * 3
    assert mask[3:8, 2:6].all() and mask[12:15, 10:13].all()
    reasons = sorted(f.reason for f in result.failures)
    assert len(reasons) == 4
    assert sum("no DICOM" in r for r in reasons) == 1  # missing-1; bad-1 is dropped, not negative
    assert any("numeric" in r for r in reasons) and any("Target 0 or 1" in r for r in reasons)
    assert any("no row" in r for r in reasons)  # unlabelled.dcm

    no_negatives = load_rsna(root, tmp_path / "out2", include_negatives=False)
    assert [s.image_id for s in no_negatives.seg_samples] == ["pos-1"]


def test_mixed_target_rows_are_reported(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("patientId,x,y,width,height,Target\na,,,,,0\na,1,1,2,2,1\n")
    table, problems = read_box_table(path)
    assert len(table["a"]) == 1
    assert any("both Target 0 and Target 1" in p for _, p in problems)


def test_missing_columns(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("patientId,Target\na,0\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_box_table(path)
