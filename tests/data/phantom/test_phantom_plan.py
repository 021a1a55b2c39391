"""What a phantom must show, decided from its report: labels, MeSH qualifiers, text fallback."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.data.phantom.generate import pair_reports, study_views
from medvl.data.phantom.plan import DRAWABLE, LEFT, RIGHT, UNCERTAIN_DRAW_P, plan_study
from medvl.data.records import ImageRecord, Study
from medvl.findings import (
    CARDIOMEGALY,
    CHEXPERT_14,
    LUNG_LESION,
    NO_FINDING,
    PLEURAL_EFFUSION,
    PNEUMOTHORAX,
    SUPPORT_DEVICES,
)


def study(
    labels: dict, mesh=(), text: str = "No acute disease.", images=(), sid: str = "s1"
) -> Study:
    full = {f: 0 for f in CHEXPERT_14}
    full[NO_FINDING] = 0
    full.update(labels)
    return Study(
        study_id=sid,
        patient_key=f"p-{sid}",
        source="test",
        report_text=text,
        sections={"findings": text},
        labels=full,
        mesh=list(mesh),
        images=list(images),
    )


def test_positive_drawn_negative_and_unmentioned_not():
    s = study({PLEURAL_EFFUSION: 1, PNEUMOTHORAX: 0, LUNG_LESION: None})
    plan = plan_study(s, np.random.default_rng(0))
    assert plan.drawn == [PLEURAL_EFFUSION]


def test_normal_report_draws_nothing():
    s = study({NO_FINDING: 1}, mesh=["normal"])
    plan = plan_study(s, np.random.default_rng(0))
    assert plan.drawn == [] and plan.ctr <= 0.485


@pytest.mark.parametrize(
    ("term", "sides", "low", "high"),
    [
        ("Pleural Effusion/left/small", (LEFT,), 0.1, 0.45),
        ("Pleural Effusion/right/large", (RIGHT,), 0.65, 1.0),
        ("Pleural Effusion/bilateral/moderate", (RIGHT, LEFT), 0.35, 0.75),
    ],
)
def test_mesh_qualifiers_set_side_and_severity(term, sides, low, high):
    plan = plan_study(study({PLEURAL_EFFUSION: 1}, mesh=[term]), np.random.default_rng(1))
    spec = plan.get(PLEURAL_EFFUSION)
    assert spec.sides == sides
    assert low <= spec.severity <= high


def test_text_fallback_without_mesh():
    s = study({PNEUMOTHORAX: 1}, text="Large right apical pneumothorax. No effusion.")
    spec = plan_study(s, np.random.default_rng(2)).get(PNEUMOTHORAX)
    assert spec.sides == (RIGHT,) and spec.severity >= 0.65 and spec.zone == "upper"


def test_cardiomegaly_sets_ctr_above_half_and_severity_scales_it():
    mild = [
        plan_study(
            study({CARDIOMEGALY: 1}, mesh=["Cardiomegaly/mild"]), np.random.default_rng(i)
        ).ctr
        for i in range(30)
    ]
    severe = [
        plan_study(
            study({CARDIOMEGALY: 1}, mesh=["Cardiomegaly/severe"]), np.random.default_rng(i)
        ).ctr
        for i in range(30)
    ]
    assert min(mild) > 0.5 and min(severe) > 0.5
    assert np.mean(severe) > np.mean(mild) + 0.03


def test_uncertain_labels_drawn_about_half_the_time_and_fainter():
    drawn, conspicuity = 0, []
    for i in range(300):
        plan = plan_study(
            study({CARDIOMEGALY: -1}, mesh=["Cardiomegaly/borderline"]), np.random.default_rng(i)
        )
        spec = plan.get(CARDIOMEGALY)
        if spec is None:
            assert plan.uncertain_not_drawn == [CARDIOMEGALY] and plan.ctr < 0.5
        else:
            drawn += 1
            assert spec.uncertain and plan.ctr > 0.5
            conspicuity.append(spec.conspicuity)
    assert abs(drawn / 300 - UNCERTAIN_DRAW_P) < 0.1
    assert max(conspicuity) <= 0.6 + 1e-9


@pytest.mark.parametrize(
    ("term", "kind"),
    [
        ("Implanted Medical Device/left", "pacemaker"),
        ("Catheters, Indwelling/right", "line"),
        ("Tube, Inserted", "tube"),
    ],
)
def test_device_kind_follows_the_report(term, kind):
    spec = plan_study(study({SUPPORT_DEVICES: 1}, mesh=[term]), np.random.default_rng(0)).get(
        SUPPORT_DEVICES
    )
    assert spec.kind == kind


def test_lesion_kind_and_count():
    spec = plan_study(
        study({LUNG_LESION: 1}, mesh=["Mass/lung/upper lobe/left"]), np.random.default_rng(0)
    ).get(LUNG_LESION)
    assert spec.kind == "mass" and spec.sides == (LEFT,) and spec.zone == "upper"
    spec = plan_study(
        study({LUNG_LESION: 1}, mesh=["Nodule/lung/multiple"]), np.random.default_rng(0)
    ).get(LUNG_LESION)
    assert spec.kind == "nodule" and spec.count >= 2


def test_extras_do_not_touch_chexpert_findings():
    s = study(
        {NO_FINDING: 0}, mesh=["Calcified Granuloma/lung/upper lobe/right", "Lung/hypoinflation"]
    )
    plan = plan_study(s, np.random.default_rng(0))
    assert plan.drawn == []
    assert {e.finding for e in plan.extras} == {"calcified_granuloma", "low_volumes"}


def test_every_drawable_finding_has_a_plan():
    for finding in DRAWABLE:
        plan = plan_study(study({finding: 1}), np.random.default_rng(0))
        assert plan.drawn == [finding]


def test_pair_reports_uses_every_report_before_repeating_and_skips_unlabelled():
    studies = [study({NO_FINDING: 1}, sid=f"s{i}") for i in range(5)]
    studies.append(Study(study_id="nolabels", patient_key="p", source="t", report_text="x"))
    paired = pair_reports(studies, 12, seed=3)
    ids = [s.study_id for s in paired]
    assert "nolabels" not in ids
    assert sorted(ids[:5]) == [f"s{i}" for i in range(5)] and sorted(ids[5:10]) == sorted(ids[:5])
    assert ids == [s.study_id for s in pair_reports(studies, 12, seed=3)]
    assert ids != [s.study_id for s in pair_reports(studies, 12, seed=4)]


@pytest.mark.parametrize(
    ("views", "expected"),
    [
        (["PA", "LL"], [("PA", "a"), ("LL", "b")]),
        (["AP"], [("AP", "a")]),
        (["PA", "PA"], [("PA", "a")]),
        (["", "PA"], [("PA", "b"), ("LL", "a")]),
        (["LATERAL"], [("PA", ""), ("LATERAL", "a")]),
        ([], [("PA", "")]),
    ],
)
def test_study_views_follow_the_real_study(views, expected):
    images = [
        ImageRecord(path="", image_id=name, view_position=v)
        for name, v in zip("abc"[: len(views)], views, strict=True)
    ]
    assert study_views(study({}, images=images)) == expected
