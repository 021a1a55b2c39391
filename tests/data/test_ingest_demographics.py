"""Ingest records sex, a 10-year age band and the manufacturer; never a birth date or an ID."""

from __future__ import annotations

import json

from medvl.data.ingest import inspect_file


def test_ingest_keeps_subgroup_fields_and_drops_identifiers(xray_tools, tmp_path) -> None:
    ds = xray_tools.dataset(xray_tools.pixels(0))
    ds.PatientSex, ds.PatientAge, ds.PatientBirthDate = "F", "047Y", "19770305"
    ds.Manufacturer = "Acme Imaging"
    path = xray_tools.save(ds, tmp_path / "img.dcm")
    kind, record = inspect_file(str(path), salt="s")
    assert kind == "image"
    assert (record["sex"], record["age_band"], record["manufacturer"]) == (
        "F",
        "40-49",
        "Acme Imaging",
    )
    text = json.dumps(record)
    for secret in ("047Y", "19770305", xray_tools.patient_ids[0], "Planted"):
        assert secret not in text


def test_missing_header_fields_stay_empty(xray_tools, tmp_path) -> None:
    path = xray_tools.save(xray_tools.dataset(xray_tools.pixels(1)), tmp_path / "img.dcm")
    kind, record = inspect_file(str(path))
    assert kind == "image"
    assert (record["sex"], record["age_band"], record["manufacturer"]) == ("", "", "")
