"""The real IU DICOM header table: allowlisted columns, counts, view resolution."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from medvl.data.sources.iu.headers import (
    IUHeader,
    header_image_id,
    load_header_table,
    load_tsne_views,
    normalize_view,
    resolve_view,
)

IDENTIFYING = ("patient", "birth", "accession", "date", "physician", "instance_uid", "sex")


@pytest.fixture(scope="module")
def headers() -> list[IUHeader]:
    return load_header_table()


def test_no_identifying_field_exists() -> None:
    names = [f.name for f in dataclasses.fields(IUHeader)]
    assert not [n for n in names if any(word in n for word in IDENTIFYING)]


def test_real_table_counts(headers) -> None:
    assert len(headers) == 7469
    assert len({h.report_id for h in headers}) == 3851
    assert Counter(h.photometric for h in headers) == {"MONOCHROME2": 3885, "MONOCHROME1": 3584}
    assert Counter(h.bits_stored for h in headers) == {12: 5906, 15: 1476, 10: 61, 14: 26}
    assert Counter(h.modality for h in headers) == {"CR": 7443, "DX": 26}
    assert Counter(h.presentation_lut_shape for h in headers)["INVERSE"] == 572
    views = Counter(h.view_position for h in headers)
    assert views == {"PA": 3593, "": 2586, "LL": 717, "AP": 423, "LATERAL": 121, "RL": 29}
    assert sum((h.pixel_spacing or h.imager_pixel_spacing) is None for h in headers) == 2
    assert Counter(h.pixel_spacing for h in headers).most_common(2) == [
        ((0.15, 0.15), 2951),
        (None, 2547),
    ]
    assert all(1500 <= h.rows <= 4300 and 1500 <= h.columns <= 4300 for h in headers)


def test_first_row(headers) -> None:
    first = headers[0]
    assert first.image_id == "CXR1000_IM-0003-2001" and first.report_id == "CXR1000"
    assert (first.rows, first.columns, first.bits_allocated, first.high_bit) == (2828, 2320, 16, 11)
    assert first.rescale_type == "LOG_E REL" and first.rescale_slope == 1.0
    assert first.dicom_filename == "1000_IM-0003-2001.dcm"
    assert first.window_center is None and first.manufacturer == ""


def test_views() -> None:
    assert normalize_view(" large  lateral ") == "LATERAL"
    assert normalize_view("nan") == "" and normalize_view(None) == ""
    assert resolve_view("PA", "LATERAL") == "LATERAL"  # t-SNE corrects a mislabelled lateral
    assert resolve_view("AP", "PA") == "AP"  # the t-SNE calls know no AP
    assert resolve_view("LL", "LATERAL") == "LL"
    assert resolve_view("AP", "") == "AP"
    assert resolve_view("PA", "LATERAL", "header") == "PA"
    assert resolve_view("PA", "", "tsne") == ""
    tsne = load_tsne_views()
    assert Counter(tsne.values()) == {"PA": 3267, "LATERAL": 584}


def test_header_image_id_alias() -> None:
    assert header_image_id("CXR1_1_IM-0001-3001") == "CXR1_IM-0001-3001"
    assert header_image_id("CXR1000_IM-0003-2001") == "CXR1000_IM-0003-2001"


def test_wrong_table_is_rejected(tmp_path) -> None:
    path = tmp_path / "meta.csv"
    path.write_text("Patient ID,Rows\n1,2\n")
    with pytest.raises(ValueError, match="imageid"):
        load_header_table(path)
