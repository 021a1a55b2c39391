"""CheXpert adapter on a fixture tree in the release layout, and on the real shipped CSV."""

from __future__ import annotations

import gzip
import itertools

import pytest

from medvl.data.sources.assets import CHEXPERT_TRAIN_CSV, asset_path
from medvl.data.sources.chexpert import load_chexpert
from medvl.findings import CARDIOMEGALY, CHEXPERT_14, EDEMA, NO_FINDING, SUPPORT_DEVICES

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_14)
RELEASE = "CheXpert-v1.0-small"


def _row(path: str, view: str, appa: str, labels: dict[str, str]) -> str:
    cells = [labels.get(name, "") for name in CHEXPERT_14]
    return ",".join([f"{RELEASE}/{path}", "Female", "68", view, appa, *cells])


@pytest.fixture
def chexpert_root(tmp_path, make_raster):
    release = tmp_path / RELEASE
    for rel in (
        "train/patient00001/study1/view1_frontal.jpg",
        "train/patient00001/study1/view2_lateral.jpg",
        "train/patient00002/study1/view1_frontal.jpg",
        "valid/patient64541/study1/view1_frontal.jpg",
    ):
        make_raster(release / rel)
    train = [
        HEADER,
        _row("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP",
             {CARDIOMEGALY: "1.0", EDEMA: "-1.0", SUPPORT_DEVICES: "0.0"}),
        _row("train/patient00001/study1/view2_lateral.jpg", "Lateral", "",
             {CARDIOMEGALY: "1.0", EDEMA: "-1.0", SUPPORT_DEVICES: "0.0"}),
        _row("train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA", {NO_FINDING: "1.0"}),
        _row("train/patient00003/study1/view1_frontal.jpg", "Frontal", "PA", {}),
        _row("train/patient00004/study1/view1_frontal.jpg", "Frontal", "PA", {EDEMA: "maybe"}),
        "no/study/here.jpg,Male,50,Frontal,PA" + "," * 14,
    ]  # fmt: skip
    (release / "train.csv").write_text("\n".join(train) + "\n")
    valid = [HEADER, _row("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP", {})]
    (release / "valid.csv").write_text("\n".join(valid) + "\n")
    return tmp_path


@pytest.mark.parametrize("use_release_folder", [False, True])
def test_reads_studies_labels_views(chexpert_root, use_release_folder: bool) -> None:
    root = chexpert_root / RELEASE if use_release_folder else chexpert_root
    result = load_chexpert(root)
    by_id = {s.study_id: s for s in result.studies}
    assert set(by_id) == {"patient00001-study1", "patient00002-study1", "patient64541-study1"}
    study = by_id["patient00001-study1"]
    assert [im.view_position for im in study.images] == ["AP", "LATERAL"]
    assert study.labels[CARDIOMEGALY] == 1 and study.labels[EDEMA] == -1
    assert study.labels[SUPPORT_DEVICES] == 0 and study.labels[NO_FINDING] is None
    assert len(study.labels) == 14 and study.report_text == ""
    assert study.images[0].columns == 20 and study.images[0].rows == 24
    assert study.images[0].path.endswith("patient00001/study1/view1_frontal.jpg")
    assert "patient00001" not in study.patient_key
    assert by_id["patient64541-study1"].split == "test"
    assert {by_id[k].split for k in ("patient00001-study1", "patient00002-study1")} <= {
        "train",
        "val",
    }
    reasons = sorted(f.reason for f in result.failures)
    assert len(reasons) == 3
    assert any("not found" in r for r in reasons)  # patient00003's image is absent
    assert any("'maybe'" in r for r in reasons)
    assert any("patientNNNNN" in r for r in reasons)


def test_csv_only_mode_and_val_fraction(chexpert_root) -> None:
    result = load_chexpert(chexpert_root, check_files=False, val_fraction=0.0)
    ids = {s.study_id for s in result.studies}
    assert "patient00003-study1" in ids  # image absent, but files are not checked
    assert {s.split for s in result.studies} == {"train", "test"}


def test_no_csv_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="train.csv"):
        load_chexpert(tmp_path)


def test_real_training_csv_head(tmp_path) -> None:
    """The first 2,000 rows of the real CheXpert train.csv (shipped with torchxrayvision)."""
    with gzip.open(asset_path(CHEXPERT_TRAIN_CSV), "rt") as fh:
        head = "".join(itertools.islice(fh, 2001))
    (tmp_path / "train.csv").write_text(head)
    result = load_chexpert(tmp_path, check_files=False)
    assert result.failures == []
    assert sum(len(s.images) for s in result.studies) == 2000
    assert len(result.studies) == 1552  # distinct patient/study pairs (checked with awk)
    assert len({s.patient_key for s in result.studies}) == 477
    first = result.studies[0]
    assert first.study_id == "patient00001-study1"
    assert first.labels[NO_FINDING] == 1 and first.labels[SUPPORT_DEVICES] == 1
    assert first.labels[CARDIOMEGALY] is None
