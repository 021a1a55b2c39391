"""The measured plugin table: lossless syntaxes decode bit-exact with every plugin, the fastest
is tried first and recorded, and HTJ2K (written by medvl) reads back exactly."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder

from medvl.io.codecs.encode import WRITABLE_SYNTAXES, compress
from medvl.io.codecs.plugins import DEFAULT_ORDER, PLUGIN_ORDER, plugin_order
from medvl.io.dicom import read_dicom

JPEG_LOSSLESS = (uid.JPEGLosslessSV1, uid.JPEGLossless)
LOSSLESS = (*WRITABLE_SYNTAXES, *JPEG_LOSSLESS)


def pixels(dtype: str, shape=(70, 54)) -> np.ndarray:
    """A gradient plus noise covering most of the stored range (12 bits for 16-bit data)."""
    rng = np.random.default_rng(4)
    top = 255 if dtype == "uint8" else 4095
    ramp = np.linspace(0, 0.8, shape[0])[:, None] + np.linspace(0, 0.2, shape[1])[None, :]
    values = ramp * top + rng.integers(0, top // 8, size=shape)
    return np.clip(values, 0, top).astype(dtype)


def encoded(build_dataset, syntax: str, source: np.ndarray, **attrs) -> pydicom.Dataset:
    """``source`` stored in ``syntax``, read back from the bytes of a Part 10 file."""
    bits = 8 if source.dtype == np.uint8 else 12
    ds = build_dataset(source, bits_stored=bits, **attrs)
    if syntax in JPEG_LOSSLESS:
        frame = imagecodecs.jpeg8_encode(source, lossless=True, predictor=1, bitspersample=bits)
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        compress(ds, syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda s: s.name)
def test_every_plugin_decodes_lossless_syntaxes_bit_exact(build_dataset, syntax, dtype):
    source = pixels(dtype)
    ds = encoded(build_dataset, syntax, source)
    decoder = get_decoder(syntax)
    assert len(decoder.available_plugins) >= 1
    for plugin in decoder.available_plugins:
        arr, _ = decoder.as_array(ds, decoding_plugin=plugin)
        np.testing.assert_array_equal(arr, source, err_msg=f"{syntax.name} via {plugin}")


@pytest.mark.parametrize("syntax", [uid.HTJ2KLossless, uid.HTJ2K], ids=lambda s: s.name)
def test_htj2k_plugins_agree_on_signed_and_multiframe_data(build_dataset, syntax):
    rng = np.random.default_rng(1)
    signed = rng.integers(-1024, 2000, size=(40, 36)).astype(np.int16)
    frames = np.stack([pixels("uint16", (40, 36)), pixels("uint16", (40, 36))[::-1]])
    for source in (signed, frames):
        ds = build_dataset(source, bits_stored=12 if source.dtype == np.uint16 else 16)
        compress(ds, syntax)
        decoder = get_decoder(syntax)
        for plugin in ("imagecodecs", "pylibjpeg"):
            arr, _ = decoder.as_array(ds, decoding_plugin=plugin)
            np.testing.assert_array_equal(arr.reshape(source.shape), source, err_msg=plugin)


@pytest.mark.parametrize(("mct", "photometric"), [(True, "YBR_RCT"), (False, "RGB")])
def test_htj2k_plugins_agree_on_colour_with_and_without_the_colour_transform(
    build_dataset, mct, photometric
):
    rgb = (np.random.default_rng(2).random((40, 30, 3)) * 255).astype(np.uint8)
    ds = build_dataset(rgb, photometric="RGB", PhotometricInterpretation=photometric)
    ds.PixelData = encapsulate([imagecodecs.htj2k_encode(rgb, reversible=True, rgb=mct)])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.file_meta.TransferSyntaxUID = uid.HTJ2KLossless
    for plugin in ("imagecodecs", "pylibjpeg"):
        arr, props = get_decoder(uid.HTJ2KLossless).as_array(ds, decoding_plugin=plugin)
        np.testing.assert_array_equal(arr, rgb, err_msg=plugin)
        assert props["photometric_interpretation"] == "RGB"


@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda s: s.name)
def test_read_dicom_records_the_first_plugin_of_the_table(build_dataset, tmp_path, syntax):
    ds = encoded(build_dataset, syntax, pixels("uint16"), WindowCenter=2048, WindowWidth=4096)
    path = tmp_path / "image.dcm"
    ds.save_as(path)
    image = read_dicom(path)
    expected = plugin_order(syntax, get_decoder(syntax).available_plugins)[0]
    assert image.decoder == expected == PLUGIN_ORDER[syntax][0]
    assert image.transfer_syntax == syntax
    reference = pixels("uint16") / 4095.0  # the window 2048 / 4096 spans the 12-bit range
    np.testing.assert_allclose(image.pixels, reference, atol=2e-3)


def test_table_names_only_plugins_pydicom_knows_for_each_syntax():
    for syntax, order in PLUGIN_ORDER.items():
        decoder = get_decoder(syntax)
        known = set(decoder.available_plugins) | {
            line.split(" ")[0] for line in decoder.missing_dependencies
        }
        assert set(order) <= known, (syntax, order, known)
        assert len(set(order)) == len(order)


def test_plugin_order_keeps_available_plugins_only_and_appends_the_rest():
    table = PLUGIN_ORDER[uid.JPEGLSLossless]
    assert plugin_order(uid.JPEGLSLossless, ["pylibjpeg", "newcomer", table[0]]) == [
        p for p in table if p in ("pylibjpeg", table[0])
    ] + ["newcomer"]
    assert plugin_order("1.2.3.4", ["pillow", "gdcm"]) == [
        p for p in DEFAULT_ORDER if p in ("pillow", "gdcm")
    ]


def test_compress_refuses_syntaxes_it_cannot_write_losslessly(build_dataset):
    with pytest.raises(ValueError, match="cannot write"):
        compress(build_dataset(pixels("uint16"), bits_stored=12), uid.JPEGBaseline8Bit)
    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="grayscale"):
        compress(build_dataset(rgb, photometric="RGB"), uid.HTJ2KLossless)
