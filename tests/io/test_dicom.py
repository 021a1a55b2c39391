"""read_dicom: decoding across transfer syntaxes, the modality -> VOI -> presentation pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import get_encoder
from pydicom.pixels.processing import convert_color_space
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    JPEG2000Lossless,
    RLELossless,
)

from medvl.io.dicom import CT_WINDOW_PRESETS, DicomImage, DicomReadError, hash_uid, read_dicom

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
MUST_DECODE = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "JPGExtended.dcm",
    "SC_rgb_rle.dcm",
    "examples_palette.dcm",
    "examples_ybr_color.dcm",
    "rtdose.dcm",
    "liver_1frame.dcm",
    "image_dfl.dcm",
]
MR_VARIANTS = {
    "MR_small_RLE.dcm": "pylibjpeg",  # the fastest measured plugins (medvl.io.codecs.plugins)
    "MR_small_jp2klossless.dcm": "pillow",
    "MR_small_jpeg_ls_lossless.dcm": "pyjpegls",
    "MR_small_bigendian.dcm": "native",
    "MR_small_expb.dcm": "native",
    "MR_small_implicit.dcm": "native",
    "MR_small_padded.dcm": "native",
}


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 written out independently of the library, output in [0, 1]."""
    x = x.astype(np.float64)
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    y = ((x - (center - 0.5)) / (width - 1) + 0.5).clip(0, 1)
    return np.where(x <= low, 0.0, np.where(x > high, 1.0, y))


def ramp(
    low: int, high: int, shape: tuple[int, int] = (16, 16), dtype: str = "uint16"
) -> np.ndarray:
    return np.linspace(low, high, shape[0] * shape[1]).round().astype(dtype).reshape(shape)


def _read_or_error(path: Path, decode: bool) -> DicomImage | DicomReadError:
    try:
        return read_dicom(path, decode=decode)
    except DicomReadError as err:
        assert err.path == str(path) and err.reason
        assert str(err) == f"{err.path}: {err.reason}"
        return err


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.iterdir() if p.is_file()))
def test_every_corpus_file_decodes_or_raises_dicom_read_error(name: str) -> None:
    header, full = _read_or_error(CORPUS / name, False), _read_or_error(CORPUS / name, True)
    if isinstance(header, DicomReadError):
        assert isinstance(full, DicomReadError)  # the header check is never stricter than decoding
    else:
        assert header.pixels is None and header.decoder == ""
    if name in MUST_DECODE:
        assert isinstance(full, DicomImage), full
    if isinstance(full, DicomImage):
        assert full.pixels.dtype == np.float32 and np.isfinite(full.pixels).all()
        assert full.pixels.min() >= 0.0 and full.pixels.max() <= 1.0
        assert full.decoder and full.voi in {"window", "voi_lut", "minmax", "none"}


@pytest.mark.parametrize(("name", "decoder"), sorted(MR_VARIANTS.items()))
def test_mr_small_variants_equal_uncompressed(name: str, decoder: str) -> None:
    reference = read_dicom(get_testdata_file("MR_small.dcm"))
    variant = read_dicom(get_testdata_file(name))
    np.testing.assert_array_equal(variant.pixels, reference.pixels)
    assert variant.decoder == decoder
    assert variant.window == reference.window == (600.0, 1600.0)


def test_mr_small_deflated_equals_uncompressed(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    deflated = read_dicom(tmp_path / "deflated.dcm")
    assert deflated.transfer_syntax == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(
        deflated.pixels, read_dicom(get_testdata_file("MR_small.dcm")).pixels
    )


def test_mr_small_window_matches_the_standard_formula() -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    image = read_dicom(get_testdata_file("MR_small.dcm"))
    expected = linear_window(ds.pixel_array, 600, 1600)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    assert image.voi == "window" and not image.inverted


def test_ct_small_modality_output_is_hounsfield() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    image = read_dicom(get_testdata_file("CT_small.dcm"), output="modality")
    hu = ds.pixel_array.astype(np.float64) * 1.0 - 1024.0
    np.testing.assert_array_equal(image.pixels, hu.astype(np.float32))
    assert image.pixels[0, 0] == 175 - 1024
    assert image.rescale == (1.0, -1024.0)
    assert image.voi == "none" and image.window is None
    assert image.modality == "CT" and image.pixel_spacing == (0.661468, 0.661468)


def test_ct_small_preset_window_is_applied_in_hu() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float64) - 1024.0
    image = read_dicom(get_testdata_file("CT_small.dcm"), window="mediastinum")
    assert image.voi == "preset:mediastinum" and image.window == CT_WINDOW_PRESETS["mediastinum"]
    np.testing.assert_allclose(image.pixels, linear_window(hu, 50, 350), atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_ct_small_compressed_keeps_hu(tmp_path: Path, syntax: str) -> None:
    if not get_encoder(syntax).is_available:
        pytest.skip(f"no encoder installed for {syntax}")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.compress(syntax)
    ds.save_as(tmp_path / "ct.dcm")
    compressed = read_dicom(tmp_path / "ct.dcm", output="modality")
    plain = read_dicom(get_testdata_file("CT_small.dcm"), output="modality")
    np.testing.assert_array_equal(compressed.pixels, plain.pixels)


def test_rescale_then_window_in_modality_units(dicom_file) -> None:
    stored = ramp(0, 1000)
    path = dicom_file(
        stored,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=500,
        WindowWidth=800,
    )
    image = read_dicom(path)
    np.testing.assert_allclose(image.pixels, linear_window(stored * 2.0 - 100, 500, 800), atol=1e-6)
    assert image.rescale == (2.0, -100.0) and image.window == (500.0, 800.0)


def test_window_index_selects_among_several(dicom_file) -> None:
    stored = ramp(0, 2000)
    path = dicom_file(stored, WindowCenter=[300, 1000], WindowWidth=[200, 1500])
    first, second = read_dicom(path), read_dicom(path, window_index=1)
    np.testing.assert_allclose(first.pixels, linear_window(stored, 300, 200), atol=1e-6)
    np.testing.assert_allclose(second.pixels, linear_window(stored, 1000, 1500), atol=1e-6)
    assert second.window == (1000.0, 1500.0)
    with pytest.raises(DicomReadError, match="window_index 2"):
        read_dicom(path, window_index=2)


def test_invalid_file_window_falls_back_to_minmax(dicom_file) -> None:
    stored = ramp(100, 300)
    image = read_dicom(dicom_file(stored, WindowCenter=200, WindowWidth=0))
    assert image.voi == "minmax" and image.window == (200.0, 200.0)
    np.testing.assert_allclose(image.pixels, (stored - 100.0) / 200.0, atol=1e-6)


def test_configured_window_overrides_the_file(dicom_file) -> None:
    stored = ramp(0, 1000)
    image = read_dicom(dicom_file(stored, WindowCenter=100, WindowWidth=50), window=(600, 400))
    assert image.voi == "window" and image.window == (600.0, 400.0)
    np.testing.assert_allclose(image.pixels, linear_window(stored, 600, 400), atol=1e-6)


@pytest.mark.parametrize("bad", ["liver", (40, 0), (40, -5)])
def test_bad_configured_window_is_a_value_error(dicom_file, bad) -> None:
    with pytest.raises(ValueError):
        read_dicom(dicom_file(ramp(0, 10)), window=bad)


def test_linear_exact_and_sigmoid_functions(dicom_file) -> None:
    stored = ramp(0, 1000)
    exact = read_dicom(
        dicom_file(stored, WindowCenter=500, WindowWidth=400, VOILUTFunction="LINEAR_EXACT")
    )
    x = stored.astype(np.float64)
    np.testing.assert_allclose(exact.pixels, ((x - 300) / 400.0).clip(0, 1), atol=1e-6)
    sigmoid = read_dicom(
        dicom_file(stored, WindowCenter=500, WindowWidth=400, VOILUTFunction="SIGMOID")
    )
    np.testing.assert_allclose(sigmoid.pixels, 1 / (1 + np.exp(-4 * (x - 500) / 400.0)), atol=1e-5)


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME2", None, False),
        ("MONOCHROME1", None, True),
        ("MONOCHROME1", "INVERSE", True),  # the INVERSE shape is how MONOCHROME1 says it: once
        ("MONOCHROME2", "INVERSE", True),
        ("MONOCHROME2", "IDENTITY", False),
    ],
)
def test_inversion_after_voi_exactly_once(dicom_file, photometric, shape, inverted) -> None:
    stored = ramp(0, 4000)
    extra = {"PresentationLUTShape": shape} if shape else {}
    image = read_dicom(
        dicom_file(
            stored,
            photometric=photometric,
            bits_stored=12,
            WindowCenter=1000,
            WindowWidth=1000,
            **extra,
        )
    )
    windowed = linear_window(stored, 1000, 1000)
    np.testing.assert_allclose(image.pixels, 1 - windowed if inverted else windowed, atol=1e-6)
    assert image.inverted is inverted and image.photometric == photometric


def test_monochrome1_minmax_makes_low_values_bright(dicom_file) -> None:
    image = read_dicom(dicom_file(ramp(0, 255, dtype="uint8"), photometric="MONOCHROME1"))
    assert image.voi == "minmax"
    assert image.pixels[0, 0] == 1.0 and image.pixels[-1, -1] == 0.0


def _lut_item(first: int, table: list[int], bits: int, vr: str = "US") -> Dataset:
    """A LUT item; ``vr="OW"`` stores LUTData as little-endian bytes, as many devices do."""
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [len(table), first, bits])
    data = np.asarray(table, dtype="<u2").tobytes() if vr == "OW" else table
    item.add_new("LUTData", vr, data)
    return item


def test_voi_lut_sequence_wins_over_window_and_is_selectable(
    dicom_file, build_dataset, save_dataset, tmp_path
) -> None:
    stored = ramp(0, 300, dtype="uint16")
    gamma = [round(4095 * (i / 255) ** 0.5) for i in range(256)]
    linear = [round(4095 * i / 255) for i in range(256)]
    ds = build_dataset(stored, bits_stored=12, WindowCenter=10, WindowWidth=5)
    ds.VOILUTSequence = [_lut_item(20, gamma, 12), _lut_item(20, linear, 12, vr="OW")]
    path = save_dataset(ds, tmp_path / "voilut.dcm")
    index = np.clip(stored.astype(int) - 20, 0, 255)
    first = read_dicom(path)
    assert first.voi == "voi_lut" and first.window is None
    np.testing.assert_allclose(first.pixels, np.asarray(gamma)[index] / 4095, atol=1e-6)
    np.testing.assert_allclose(
        read_dicom(path, window_index=1).pixels, np.asarray(linear)[index] / 4095, atol=1e-6
    )
    with pytest.raises(DicomReadError, match="VOI LUT"):
        read_dicom(path, window_index=2)


def test_modality_lut_sequence_feeds_the_window(build_dataset, save_dataset, tmp_path) -> None:
    stored = ramp(0, 99, shape=(10, 10))
    table = [3 * i + 7 for i in range(100)]
    ds = build_dataset(stored, bits_stored=8, WindowCenter=150, WindowWidth=200)
    ds.ModalityLUTSequence = [_lut_item(0, table, 16)]
    ds.ModalityLUTSequence[0].ModalityLUTType = "US"
    path = save_dataset(ds, tmp_path / "mlut.dcm")
    np.testing.assert_array_equal(read_dicom(path, output="modality").pixels, 3.0 * stored + 7)
    np.testing.assert_allclose(
        read_dicom(path).pixels, linear_window(3.0 * stored + 7, 150, 200), atol=1e-6
    )


def _functional_group(
    slope: float, intercept: float, center: float, width: float, z: float
) -> Dataset:
    transform, voi, plane, group = Dataset(), Dataset(), Dataset(), Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = (
        slope,
        intercept,
        "HU",
    )
    voi.WindowCenter, voi.WindowWidth = center, width
    plane.ImagePositionPatient = [0, 0, z]
    group.PixelValueTransformationSequence = [transform]
    group.FrameVOILUTSequence = [voi]
    group.PlanePositionSequence = [plane]
    return group


def test_enhanced_multiframe_uses_per_frame_groups(build_dataset, save_dataset, tmp_path) -> None:
    stored = np.stack([ramp(0, 1000), ramp(0, 1000)])
    ds = build_dataset(stored, bits_stored=12, modality="CT", sop_class=EnhancedCTImageStorage)
    ds.PerFrameFunctionalGroupsSequence = [
        _functional_group(1, -1024, 40, 400, 0.0),
        _functional_group(2, -500, 500, 1000, 5.0),
    ]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.6], 5.0
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    path = save_dataset(ds, tmp_path / "enhanced.dcm")
    hu = read_dicom(path, output="modality").pixels
    np.testing.assert_array_equal(hu[0], stored[0] - 1024.0)
    np.testing.assert_array_equal(hu[1], stored[1] * 2.0 - 500)
    image = read_dicom(path)
    assert image.pixels.shape == (2, 16, 16) and image.frames == 2
    np.testing.assert_allclose(
        image.pixels[0], linear_window(stored[0] - 1024.0, 40, 400), atol=1e-6
    )
    np.testing.assert_allclose(
        image.pixels[1], linear_window(stored[1] * 2.0 - 500, 500, 1000), atol=1e-6
    )
    assert image.pixel_spacing == (0.5, 0.6) and image.slice_thickness == 5.0
    assert image.frame_positions == ((0.0, 0.0, 0.0), (0.0, 0.0, 5.0))


def test_multiframe_and_rgb_layouts(dicom_file) -> None:
    frames = np.stack([ramp(0, 100 * (i + 1), shape=(8, 12)) for i in range(3)])
    path = dicom_file(frames)
    assert read_dicom(path).pixels.shape == (3, 8, 12)
    rgb = read_dicom(path, color="rgb").pixels
    assert rgb.shape == (3, 8, 12, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_color_images_to_rgb_and_luminance(build_dataset, save_dataset, tmp_path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    path = save_dataset(
        build_dataset(ybr, photometric="YBR_FULL", modality="XC"), tmp_path / "ybr.dcm"
    )
    as_rgb = read_dicom(path, color="rgb")
    assert as_rgb.photometric == "YBR_FULL" and as_rgb.voi == "none"
    np.testing.assert_allclose(as_rgb.pixels, rgb / 255.0, atol=2.5 / 255)
    gray = read_dicom(path).pixels
    luma = (rgb / 255.0) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(gray, luma, atol=2.5 / 255)


def test_spacing_falls_back_to_imager_pixel_spacing(dicom_file) -> None:
    assert read_dicom(dicom_file(ramp(0, 9), ImagerPixelSpacing=[0.15, 0.14])).pixel_spacing == (
        0.15,
        0.14,
    )
    both = dicom_file(ramp(0, 9), PixelSpacing=[0.2, 0.3], ImagerPixelSpacing=[0.15, 0.14])
    assert read_dicom(both).pixel_spacing == (0.2, 0.3)
    assert read_dicom(dicom_file(ramp(0, 9))).pixel_spacing is None


def test_metadata_is_hashed_and_phi_free(dicom_file, planted_phi) -> None:
    path = dicom_file(ramp(0, 9), ViewPosition="PA", SOPInstanceUID="1.2.3.4")
    image = read_dicom(path)
    assert image.sop_uid_hash == hash_uid("1.2.3.4") and len(image.sop_uid_hash) == 16
    assert image.view_position == "PA" and image.modality == "DX"
    assert image.transfer_syntax == "1.2.840.10008.1.2.1" and image.decoder == "native"
    text = repr({k: v for k, v in vars(image).items() if k != "pixels"})
    assert "1.2.3.4" not in text
    assert not any(value in text for value in planted_phi.values())


def test_hash_uid_is_stable_salted_and_empty_safe() -> None:
    assert hash_uid("1.2.3") == hash_uid("1.2.3 ") == hash_uid("1.2.3\x00")
    assert hash_uid("1.2.3") != hash_uid("1.2.3", salt="site-a")
    assert hash_uid("1.2.3") != hash_uid("1.2.4")
    assert hash_uid("") == ""
    assert all(c in "0123456789abcdef" for c in hash_uid("1.2.3"))


def test_header_only_read_matches_full_read(dicom_file) -> None:
    path = dicom_file(ramp(0, 4000), bits_stored=12, PixelSpacing=[0.2, 0.2])
    header, full = read_dicom(path, decode=False), read_dicom(path)
    assert header.pixels is None and header.decoder == "" and header.voi == "none"
    for name in (
        "rows",
        "columns",
        "frames",
        "bits_stored",
        "photometric",
        "pixel_spacing",
        "sop_uid_hash",
        "transfer_syntax",
    ):
        assert getattr(header, name) == getattr(full, name)
