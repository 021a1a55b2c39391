"""Records and manifests: JSONL round trip, patient-level splits, pair expansion."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from medvl.data.records import (
    ImageRecord,
    Study,
    assign_splits,
    read_manifest,
    split_of,
    study_pairs,
    write_manifest,
)


def _study(i: int, patient: str) -> Study:
    images = [
        ImageRecord(
            path=f"/d/{i}_pa.dcm",
            image_id=f"{i}-pa",
            view_position="PA",
            pixel_spacing=(0.2, 0.2),
            masks={"lungs": f"/d/{i}_lungs.png"},
        ),
        ImageRecord(path=f"/d/{i}_lat.dcm", image_id=f"{i}-lat", view_position="LL"),
    ]
    return Study(
        study_id=f"s{i}",
        patient_key=patient,
        source="test",
        report_text="raw",
        sections={"findings": "Heart is large.", "impression": "Cardiomegaly."},
        labels={"Cardiomegaly": 1, "Edema": None, "Pneumothorax": 0},
        images=images,
    )


def test_manifest_round_trip(tmp_path: Path) -> None:
    studies = [_study(i, f"p{i % 3}") for i in range(5)]
    path = write_manifest(tmp_path / "m.jsonl", studies)
    again = read_manifest(path, Study)
    assert again == studies
    assert isinstance(again[0].images[0].pixel_spacing, tuple)


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"study_id": "a", "patient_key": "p", "source": "x"}\n{"bogus": 1}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not a Study record"):
        read_manifest(path, Study)


def test_splits_are_patient_level_and_deterministic() -> None:
    studies = [_study(i, f"p{i // 2}") for i in range(400)]
    assign_splits(studies, seed=3)
    by_patient: dict[str, set[str]] = {}
    for s in studies:
        by_patient.setdefault(s.patient_key, set()).add(s.split)
    assert all(len(v) == 1 for v in by_patient.values())
    counts = Counter(s.split for s in studies)
    assert 0.7 < counts["train"] / 400 < 0.9
    assert counts["val"] > 0 and counts["test"] > 0
    assert split_of("p7", seed=3) == split_of("p7", seed=3)
    with pytest.raises(ValueError, match="summing to 1"):
        split_of("p", (0.5, 0.2, 0.2))


def test_study_pairs_filters_views_and_uses_model_text() -> None:
    studies = assign_splits([_study(i, f"p{i}") for i in range(3)])
    pairs = study_pairs(studies)
    assert len(pairs) == 3
    assert all(p.image.view_position == "PA" for p in pairs)
    assert pairs[0].text == "Heart is large. Cardiomegaly."
    assert len(study_pairs(studies, views=None)) == 6
    split = studies[0].split
    assert all(p.split == split for p in study_pairs(studies, split=split))
