"""Reduced-resolution JPEG 2000 / HTJ2K decoding: the level chosen, the display pipeline kept,
and the result equal to full decode + resize within the resize tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydicom import uid

from medvl.io.codecs.encode import compress
from medvl.io.codecs.reduced import reduction_level
from medvl.io.dicom import DicomReadError, read_dicom

SHAPE = (600, 480)
REDUCIBLE = (uid.JPEG2000Lossless, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL)


def radiograph(seed: int = 0, shape=SHAPE) -> np.ndarray:
    """Smooth anatomy-like field (blurred blobs, a bright 'spine') plus noise, 12 bits."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]] / np.array(shape)[:, None, None]
    field = 0.35 + 0.25 * np.exp(-((cols - 0.5) ** 2) / 0.004) + 0.2 * rows
    for _ in range(6):
        r, c, s = rng.random(), rng.random(), rng.uniform(0.05, 0.15)
        field -= 0.15 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * s * s))
    field += rng.normal(0, 0.01, shape)
    return np.clip(field * 4095, 0, 4095).astype(np.uint16)


def area(pixels: np.ndarray, size: tuple[int, int], mode: str = "area") -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(pixels))[None, None]
    options = {"antialias": True} if mode == "bilinear" else {}
    return torch.nn.functional.interpolate(tensor, size, mode=mode, **options)[0, 0].numpy()


def assert_within_resize_tolerance(
    full: np.ndarray, reduced: np.ndarray, size, stored_unit: float = 0.0
) -> None:
    """Reduced + area resize vs full + area resize, measured against the difference between two
    standard resizes of the full image (area vs antialiased bilinear): at most 3x that, in mean
    and in the 99th percentile (the 5/3 wavelet low-pass keeps more noise than a box filter),
    plus ``stored_unit``: openjpeg's integer wavelet rounds reduced levels up by about one
    stored value, which only an 8-bit image can see."""
    reference = area(full, size)
    diff = np.abs(area(reduced, size) - reference)
    yardstick = np.abs(area(full, size, "bilinear") - reference)
    assert diff.mean() <= 3 * yardstick.mean() + stored_unit, (diff.mean(), yardstick.mean())
    assert np.percentile(diff, 99) <= 3 * np.percentile(yardstick, 99) + stored_unit


@pytest.fixture
def j2k_file(tmp_path, build_dataset, save_dataset):
    def build(syntax=uid.JPEG2000Lossless, source=None, name="image.dcm", **attrs):
        ds = build_dataset(radiograph() if source is None else source, bits_stored=12, **attrs)
        return save_dataset(compress(ds, syntax), tmp_path / name)

    return build


def test_reduction_level_is_the_smallest_image_still_covering_the_target():
    assert reduction_level(2500, 2000, 512, 5) == 2  # longest side: 625 >= 512
    assert reduction_level(2500, 2000, (512, 512), 5) == 1  # both sides: 1250 x 1000
    assert reduction_level(2500, 2000, 224, 5) == 3  # 313 >= 224; level 4 (157) is too small
    assert reduction_level(2500, 2000, 224, 2) == 2  # no more levels than the codestream has
    assert reduction_level(600, 480, 301, 5) == 0  # under 2x smaller: decode in full
    assert reduction_level(601, 480, 301, 5) == 1  # ceil(601 / 2) = 301


@pytest.mark.parametrize("syntax", REDUCIBLE, ids=lambda s: s.name)
@pytest.mark.parametrize(
    "attrs",
    [
        {"WindowCenter": 2048, "WindowWidth": 4096},
        {"photometric": "MONOCHROME1", "WindowCenter": 1800, "WindowWidth": 2400},
        {"RescaleSlope": 2, "RescaleIntercept": -1000, "WindowCenter": 2600, "WindowWidth": 5000},
    ],
    ids=["window", "monochrome1", "rescale"],
)
def test_reduced_decode_equals_full_decode_plus_resize(j2k_file, syntax, attrs):
    path = j2k_file(syntax, **attrs)
    full = read_dicom(path)
    reduced = read_dicom(path, target_size=140)
    assert (full.reduction, reduced.reduction) == (0, 2)
    assert reduced.pixels.shape == (150, 120) and reduced.decoder == "pillow"
    assert (reduced.rows, reduced.columns, reduced.pixel_spacing) == (
        full.rows, full.columns, full.pixel_spacing,
    )  # fmt: skip
    assert reduced.inverted == full.inverted and reduced.voi == full.voi == "window"
    assert reduced.window == full.window
    assert_within_resize_tolerance(full.pixels, reduced.pixels, (140, 112))


def test_eight_bit_codestreams_reduce_without_rescaling(j2k_file, build_dataset, save_dataset):
    source = (radiograph() >> 4).astype(np.uint8)
    for syntax in (uid.JPEG2000Lossless, uid.HTJ2KLossless):
        ds = build_dataset(source, bits_stored=8, WindowCenter=128, WindowWidth=256)
        path = save_dataset(compress(ds, syntax), j2k_file().parent / f"{syntax}-8.dcm")
        full, reduced = read_dicom(path), read_dicom(path, target_size=140)
        assert reduced.reduction == 2
        assert_within_resize_tolerance(full.pixels, reduced.pixels, (140, 112), 1.2 / 255)


def test_files_without_a_window_decode_in_full_unless_the_caller_windows(j2k_file):
    """A min-max window needs the full image's extremes; a configured window or modality output
    does not."""
    path = j2k_file()
    assert read_dicom(path, target_size=140).reduction == 0
    assert read_dicom(path, target_size=140, window=(2048, 4096)).reduction == 2
    assert read_dicom(path, target_size=140, output="modality").reduction == 2
    windowed = j2k_file(name="windowed.dcm", WindowCenter=2048, WindowWidth=4096)
    assert read_dicom(windowed, target_size=140).reduction == 2


def test_monochrome1_is_inverted_once_at_reduced_resolution(j2k_file):
    plain = read_dicom(
        j2k_file(name="m2.dcm", WindowCenter=2048, WindowWidth=4096), target_size=140
    )
    inverse = read_dicom(
        j2k_file(name="m1.dcm", photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=4096),
        target_size=140,
    )
    np.testing.assert_allclose(inverse.pixels, 1.0 - plain.pixels, atol=1e-6)


def test_pair_targets_keep_both_sides_and_multiframe_files_reduce_every_frame(j2k_file):
    frames = np.stack([radiograph(1), radiograph(2)])
    window = {"WindowCenter": 2048, "WindowWidth": 4096}
    image = read_dicom(j2k_file(uid.HTJ2KLossless, frames, **window), target_size=(150, 100))
    assert image.reduction == 2 and image.pixels.shape == (2, 150, 120)
    full = read_dicom(j2k_file(uid.HTJ2KLossless, frames, name="again.dcm", **window))
    for k in range(2):
        assert_within_resize_tolerance(full.pixels[k], image.pixels[k], (75, 60))
    assert read_dicom(j2k_file(name="tall.dcm", **window), target_size=(200, 200)).reduction == 1


def test_other_files_decode_in_full_whatever_the_target(j2k_file, dicom_file):
    native = dicom_file(radiograph(), bits_stored=12)
    image = read_dicom(native, target_size=64)
    assert image.reduction == 0 and image.pixels.shape == SHAPE
    np.testing.assert_array_equal(image.pixels, read_dicom(native).pixels)
    window = {"WindowCenter": 0, "WindowWidth": 4096}
    signed = radiograph().astype(np.int16) - 2048
    ct = read_dicom(j2k_file(source=signed, name="signed.dcm", **window), target_size=64)
    assert ct.reduction == 0 and ct.pixels.shape == SHAPE
    assert read_dicom(j2k_file(name="big.dcm", **window), target_size=400).reduction == 0


def test_a_codestream_that_contradicts_the_header_is_an_error_not_a_reduced_image(
    tmp_path, build_dataset, save_dataset
):
    ds = compress(build_dataset(radiograph(), bits_stored=12), uid.JPEG2000Lossless)
    ds.Rows = 500  # the codestream holds 600 rows
    path = save_dataset(ds, tmp_path / "liar.dcm")
    with pytest.raises(DicomReadError) as err:
        read_dicom(path, target_size=140)
    assert str(path) in str(err.value)


def test_invalid_target_size_is_a_value_error(j2k_file):
    with pytest.raises(ValueError, match="target_size"):
        read_dicom(j2k_file(), target_size=0)
