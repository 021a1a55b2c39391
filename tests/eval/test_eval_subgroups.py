"""Subgroup metrics: a subgroup made worse on purpose is found, and thin ones are not scored."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medvl.data.records import ImageRecord, age_band, header_demographics
from medvl.eval.subgroups import subgroup_report, subgroup_values, write_subgroup_csv

FINDINGS = ["Cardiomegaly", "Edema"]


def _synthetic(n: int = 400, seed: int = 0):
    """Probabilities that track the labels, except at maker 'B', where they are noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, 2)).astype(float)
    makers = np.where(np.arange(n) % 4 == 0, "B", "A")
    signal = labels + rng.normal(0, 0.6, size=labels.shape)
    noise = rng.normal(0, 1, size=labels.shape)
    probs = 1 / (1 + np.exp(-np.where(makers[:, None] == "B", noise, signal)))
    sexes = rng.choice(["M", "F"], size=n)  # independent of the maker
    records = [
        ImageRecord(path="", image_id=str(i), sex=str(s), view_position="PA", manufacturer=str(m))
        for i, (s, m) in enumerate(zip(sexes, makers, strict=True))
    ]
    return probs, labels, records, makers


def test_the_worse_site_is_the_worst_subgroup_with_its_gap() -> None:
    probs, labels, records, makers = _synthetic()
    groups = subgroup_values(records, ["sex", "manufacturer", "age_band"])
    assert set(groups["age_band"]) == {"unknown"}
    report = subgroup_report(probs, labels, FINDINGS, groups, min_positives=5)
    worst = report["worst"]
    assert (worst["field"], worst["value"], worst["n"]) == ("manufacturer", "B", 100)
    b = makers == "B"
    expected_b = np.mean([roc_auc_score(labels[b, j], probs[b, j]) for j in range(2)])
    whole = np.mean([roc_auc_score(labels[:, j], probs[:, j]) for j in range(2)])
    assert worst["macro_auroc"] == pytest.approx(expected_b)
    assert worst["gap"] == pytest.approx(whole - expected_b)
    assert worst["gap"] > 0.2  # noise vs signal
    assert report["whole"]["macro_auroc"] == pytest.approx(whole)
    by_key = {(g["field"], g["value"]): g for g in report["groups"]}
    cardio = by_key[("manufacturer", "B")]["per_finding"]["Cardiomegaly"]
    assert cardio["positives"] == int(labels[b, 0].sum())
    assert cardio["negatives"] == int(b.sum() - labels[b, 0].sum())
    assert abs(by_key[("sex", "M")]["gap"]) < 0.1  # sex was not made worse


def test_thin_subgroups_are_reported_as_such_not_as_zero(tmp_path) -> None:
    probs, labels, records, _ = _synthetic(n=40)
    labels[:, 1] = 0.0
    labels[:3, 1] = 1.0  # Edema: 3 positives in all
    records[0].manufacturer = "C"  # one image from a third maker
    report = subgroup_report(
        probs, labels, FINDINGS, subgroup_values(records, ["manufacturer"]), min_positives=5
    )
    by_value = {g["value"]: g for g in report["groups"]}
    edema = by_value["A"]["per_finding"]["Edema"]
    assert edema["auroc"] is None and edema["status"] == "too few positives"
    assert by_value["A"]["macro_auroc"] is not None  # Cardiomegaly still scored
    c = by_value["C"]
    assert c["n"] == 1 and c["macro_auroc"] is None and c["gap"] is None
    assert c["status"] == "too few positives"
    rows = list(csv.DictReader(write_subgroup_csv(report, tmp_path / "s.csv").open()))
    c_macro = next(r for r in rows if r["value"] == "C" and r["finding"] == "macro")
    assert c_macro["auroc"] == "" and c_macro["status"] == "too few positives"
    assert not any(r["auroc"] and math.isclose(float(r["auroc"]), 0.0) for r in rows)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="'site' is not one of"):
        subgroup_values([], ["site"])


@pytest.mark.parametrize(
    ("age", "band"),
    [("045Y", "40-49"), ("009Y", "0-9"), ("006M", "0-9"), ("089Y", "80-89"), ("095Y", "90+"),
     ("", ""), ("19450101", ""), ("45", "")],
)  # fmt: skip
def test_age_bands_are_ten_years_wide_and_never_exact(age: str, band: str) -> None:
    assert age_band(age) == band


def test_header_demographics_keep_only_safe_codes() -> None:
    assert header_demographics(" f ", "071Y", "  Acme   Imaging ") == {
        "sex": "F",
        "age_band": "70-79",
        "manufacturer": "Acme Imaging",
    }
    assert header_demographics("Jane", "", "")["sex"] == ""


def test_retrieval_gap_finds_the_subgroup_whose_matches_were_scrambled() -> None:
    from medvl.eval.subgroups import retrieval_subgroups

    rng = np.random.default_rng(0)
    n = 60
    similarity = np.eye(n) + rng.normal(0, 0.1, size=(n, n))  # image i matches report i
    site = np.where(np.arange(n) < 20, "B", "A")
    similarity[site == "B"] = rng.normal(0, 0.1, size=(20, n))  # site B: no signal
    ids = [str(i) for i in range(n)]
    report = retrieval_subgroups(similarity, ids, ids, {"manufacturer": list(site)}, min_images=5)
    groups = {g["value"]: g for g in report["groups"]}
    assert groups["A"]["image_to_text"]["R@1"] == 1.0
    assert groups["B"]["image_to_text"]["R@1"] < 0.2
    whole = report["whole"]["image_to_text"]["R@1"]
    assert report["worst"]["value"] == "B"
    assert report["worst"]["gap"] == pytest.approx(whole - groups["B"]["image_to_text"]["R@1"])
