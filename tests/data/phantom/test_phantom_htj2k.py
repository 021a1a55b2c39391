"""Phantoms written as HTJ2K (or another lossless syntax) hold the same pixels as uncompressed
ones, read back through the measured plugin, and the syntax is part of the config hash."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, HTJ2KLossless, JPEG2000Lossless

from medvl.data.phantom import PhantomConfig, generate_phantoms, phantom_hash
from medvl.data.records import Study, read_manifest
from medvl.io.dicom import read_dicom


@pytest.fixture(scope="module")
def pair(tmp_path_factory, iu_result):
    """Two studies generated twice with one seed: uncompressed and HTJ2K lossless."""
    reports = [s for s in iu_result.studies if s.labels][:2]
    folders = {}
    for syntax in (ExplicitVRLittleEndian, HTJ2KLossless):
        out = tmp_path_factory.mktemp(f"phantom-{syntax}")
        generate_phantoms(
            2, out, seed=5, size=128, workers=1, studies=reports, progress=False,
            transfer_syntax=syntax,
        )  # fmt: skip
        folders[syntax] = out
    return folders


def test_htj2k_phantoms_hold_the_uncompressed_pixels_bit_exact(pair):
    plain = read_manifest(pair[ExplicitVRLittleEndian] / "studies.jsonl", Study)
    htj2k = read_manifest(pair[HTJ2KLossless] / "studies.jsonl", Study)
    images = [
        (a, b)
        for sa, sb in zip(plain, htj2k, strict=True)
        for a, b in zip(sa.images, sb.images, strict=True)
    ]
    assert len(images) >= 2
    for a, b in images:
        assert (a.transfer_syntax, b.transfer_syntax) == (ExplicitVRLittleEndian, HTJ2KLossless)
        ds = pydicom.dcmread(b.path)
        assert ds.file_meta.TransferSyntaxUID == HTJ2KLossless and ds["PixelData"].VR == "OB"
        np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(a.path).pixel_array)
        image = read_dicom(b.path)
        assert image.decoder == "imagecodecs"
        np.testing.assert_array_equal(image.pixels, read_dicom(a.path).pixels)
    info = json.loads((pair[HTJ2KLossless] / "phantom_info.json").read_text())
    assert info["transfer_syntax"] == HTJ2KLossless


def test_transfer_syntax_is_hashed_only_when_not_uncompressed():
    base = PhantomConfig(n_studies=10, size=64)
    assert phantom_hash(base) == phantom_hash(
        dataclasses.replace(base, transfer_syntax=ExplicitVRLittleEndian)
    )
    hashes = {
        phantom_hash(dataclasses.replace(base, transfer_syntax=s))
        for s in (HTJ2KLossless, JPEG2000Lossless)
    }
    assert len(hashes) == 2 and phantom_hash(base) not in hashes


def test_config_refuses_a_syntax_it_cannot_write():
    with pytest.raises(ValueError, match="transfer_syntax"):
        PhantomConfig(transfer_syntax="1.2.840.10008.1.2.4.50")  # lossy JPEG baseline
