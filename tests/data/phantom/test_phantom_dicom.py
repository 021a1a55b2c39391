"""Phantom DICOM writer: photometric handling, VOI window, header sampling, identifiers."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from medvl.data.phantom.dicom import (
    CR_STORAGE,
    DEFAULT_FIELD_MM,
    DEIDENTIFICATION_METHOD,
    DX_PRESENTATION_STORAGE,
    HeaderChoice,
    HeaderSampler,
    build_dataset,
    make_identity,
    stored_values,
    write_dataset,
)
from medvl.data.sources.iu.headers import IUHeader
from medvl.io.dicom import read_dicom


def header(**changes) -> IUHeader:
    base = IUHeader(
        image_id="CXR1_IM-0001-1001",
        report_id="CXR1",
        view_position="PA",
        modality="CR",
        photometric="MONOCHROME2",
        bits_allocated=16,
        bits_stored=12,
        high_bit=11,
        pixel_representation=0,
        rows=2828,
        columns=2320,
        pixel_spacing=(0.15, 0.15),
        imager_pixel_spacing=(0.15, 0.15),
        rescale_slope=1.0,
        rescale_intercept=0.0,
        rescale_type="US",
        window_center=None,
        window_width=None,
        presentation_lut_shape="IDENTITY",
        sop_class_uid=CR_STORAGE,
        body_part="CHEST",
        manufacturer="",
        detector_manufacturer="",
        detector_model="",
        kvp=120.0,
        dicom_filename="",
    )
    return dataclasses.replace(base, **changes)


def gradient(size: int = 48) -> np.ndarray:
    """A display image: dark 'lung' square on a bright background."""
    pixels = np.full((size, size), 0.8, np.float32)
    pixels[8:40, 8:24] = 0.2
    pixels += np.linspace(0, 0.1, size, dtype=np.float32)[None, :]
    return pixels


def write(tmp_path, name: str, pixels: np.ndarray, choice: HeaderChoice, seed: int = 0):
    rng = np.random.default_rng(seed)
    stored, window = stored_values(pixels, choice, rng)
    identity = make_identity(0, 1, 0)
    ds = build_dataset(stored, window, choice, identity, "PA", ("L", "F"), 0.4)
    path = tmp_path / f"{name}.dcm"
    write_dataset(path, ds)
    return path


@pytest.mark.parametrize(
    ("photometric", "shape"),
    [("MONOCHROME2", "IDENTITY"), ("MONOCHROME1", ""), ("MONOCHROME1", "INVERSE")],
)
def test_written_pixels_read_back_as_rendered(tmp_path, photometric, shape):
    choice = HeaderChoice.from_header(header(photometric=photometric, presentation_lut_shape=shape))
    pixels = gradient()
    decoded = read_dicom(write(tmp_path, "x", pixels, choice))
    span = float(pydicom.dcmread(tmp_path / "x.dcm").WindowWidth) - 1
    assert np.abs(decoded.pixels - pixels).max() <= 1.0 / span + 1e-6
    assert decoded.pixels[20, 16] < decoded.pixels[2, 2]  # lung dark, background bright


def test_monochrome1_stores_the_inverse_and_reads_like_monochrome2(tmp_path):
    pixels = gradient()
    mono2 = HeaderChoice.from_header(header())
    mono1 = HeaderChoice.from_header(
        header(photometric="MONOCHROME1", presentation_lut_shape="INVERSE")
    )
    p2, p1 = (
        write(tmp_path, "m2", pixels, mono2, seed=5),
        write(tmp_path, "m1", pixels, mono1, seed=5),
    )
    raw1 = pydicom.dcmread(p1).pixel_array.astype(int)
    assert raw1[20, 16] > raw1[2, 2]  # stored values: lung high in MONOCHROME1
    np.testing.assert_allclose(read_dicom(p1).pixels, read_dicom(p2).pixels, atol=2e-3)
    assert read_dicom(p1).inverted and not read_dicom(p2).inverted


def test_header_choice_clamps_to_valid_phantom_attributes():
    choice = HeaderChoice.from_header(
        header(bits_stored=10, modality="DX", presentation_lut_shape="INVERSE")
    )
    assert choice.bits_stored == 12 and choice.modality == "DX"
    assert choice.presentation_lut_shape == ""  # INVERSE with MONOCHROME2 would invert twice
    assert choice.field_mm == pytest.approx(2828 * 0.15)
    assert (
        HeaderChoice.from_header(header(pixel_spacing=None, imager_pixel_spacing=None)).field_mm
        == DEFAULT_FIELD_MM
    )


def test_dx_files_use_the_dx_storage_class(tmp_path):
    choice = HeaderChoice.from_header(header(modality="DX"))
    ds = pydicom.dcmread(write(tmp_path, "dx", gradient(), choice))
    assert ds.SOPClassUID == DX_PRESENTATION_STORAGE == ds.file_meta.MediaStorageSOPClassUID
    assert ds.PresentationIntentType == "FOR PRESENTATION"


def test_sampler_prefers_the_real_image_row_then_its_view_class():
    rows = [
        header(image_id="CXR1_IM-0001-1001"),
        header(image_id="CXR2_IM-0002-2001", view_position="LL", bits_stored=15),
    ]
    sampler = HeaderSampler(rows)
    rng = np.random.default_rng(0)
    assert (
        sampler.choose("CXR1_IM-0001-1001", lateral=False, rng=rng).source_image
        == "CXR1_IM-0001-1001"
    )
    assert (
        sampler.choose("CXR1_1_IM-0001-1001", lateral=False, rng=rng).source_image
        == "CXR1_IM-0001-1001"
    )
    assert sampler.choose("unknown", lateral=True, rng=rng).bits_stored == 15


def test_identity_is_deterministic_and_synthetic():
    a, b, c = make_identity(7, 12, 1), make_identity(7, 12, 1), make_identity(8, 12, 1)
    assert a == b and a.sop_uid != c.sop_uid
    assert a.patient_name == "PHANTOM^000012" and pydicom.uid.UID(a.sop_uid).is_valid


def test_images_of_one_study_share_its_date_and_time_only():
    first, second = make_identity(7, 12, 0), make_identity(7, 12, 1)
    assert first.study_uid == second.study_uid and first.sop_uid != second.sop_uid
    assert (first.study_date, first.study_time) == (second.study_date, second.study_time)
    others = {
        (make_identity(7, i, 0).study_date, make_identity(7, i, 0).study_time) for i in range(20)
    }
    assert len(others) == 20  # still drawn per study, not one constant


def test_identity_removed_says_how(tmp_path):
    path = write(tmp_path, "a", gradient(), HeaderChoice.from_header(header()))
    ds = pydicom.dcmread(path)
    assert ds.PatientIdentityRemoved == "YES"
    assert (
        ds.DeidentificationMethod == DEIDENTIFICATION_METHOD
        and len(ds.DeidentificationMethod) <= 64
    )


@pytest.mark.pacs
@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_dciodvfy_finds_no_errors(tmp_path, modality):
    program = shutil.which("dciodvfy")
    if program is None:
        message = "dciodvfy is not installed; run: apt-get install -y dicom3tools"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    choice = HeaderChoice.from_header(header(modality=modality))
    path = write(tmp_path, modality, gradient(), choice)
    done = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    assert [x for x in lines if x.startswith("Error")] == []
    assert pydicom.dcmread(path).Modality == modality
