"""read_dicom failure modes: every bad input is a DicomReadError naming the file, without PHI."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import JPEG2000Lossless, RLELossless

from medvl.io.dicom import DicomImage, DicomReadError, read_dicom

PIXELS = np.arange(48, dtype=np.uint16).reshape(6, 8) * 50


def _plant(path: Path, fields: dict[str, tuple[str, str | int]]) -> Path:
    """Rewrite ``path`` with the exact bytes of some elements, bypassing pydicom's value checks.

    The file is read back first: pydicom writes raw elements untouched only for datasets that
    keep their original encoding.
    """
    ds = pydicom.dcmread(path)
    for keyword, (vr, value) in fields.items():
        tag = Tag(pydicom.datadict.tag_for_keyword(keyword))
        if vr == "US":
            data = struct.pack("<H", value)
        else:
            data = str(value).encode("latin-1")
            data += b" " * (len(data) % 2)
        ds[tag] = RawDataElement(tag, vr, len(data), data, 0, False, True)
    ds.save_as(path)
    return path


def _with_syntax(path: Path, uid: str) -> Path:
    """Rewrite the file meta's TransferSyntaxUID, keeping the dataset bytes as they are."""
    data = path.read_bytes()
    group_length = struct.unpack("<I", data[140:144])[0]
    body = data[144 + group_length :]
    meta = pydicom.dcmread(path).file_meta
    meta.TransferSyntaxUID = uid
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    path.write_bytes(data[:132] + buffer.getvalue() + body)
    return path


def _write(ds: Dataset, path: Path, save_dataset) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
        return save_dataset(ds, path)


def _assert_clean_error(err: DicomReadError, path: Path, phi: dict[str, str]) -> None:
    message = str(err)
    assert message.startswith(str(path)) and err.path == str(path) and err.reason
    assert not any(value in message for value in phi.values()), message
    assert not any(part in message for value in phi.values() for part in value.split("^"))


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


BadFile = Callable[[Path, Callable, Callable], Path]


def _valid(tmp: Path, build, save) -> Path:
    return save(build(PIXELS, bits_stored=12), tmp / "valid.dcm")


def _edited(**attributes: object) -> BadFile:
    def make(tmp: Path, build, save) -> Path:
        ds = build(PIXELS, bits_stored=12)
        for keyword, value in attributes.items():
            if value is None:
                del ds[keyword]
            else:
                setattr(ds, keyword, value)
        return _write(ds, tmp / "edited.dcm", save)

    return make


def _broken_value(keyword: str, vr: str, value: object) -> BadFile:
    def make(tmp: Path, build, save) -> Path:
        return _plant(_valid(tmp, build, save), {keyword: (vr, value)})

    return make


def _syntax(uid: str) -> BadFile:
    def make(tmp: Path, build, save) -> Path:
        return _with_syntax(_valid(tmp, build, save), uid)

    return make


def _corrupt_rle(tmp: Path, build, save) -> Path:
    ds = build(PIXELS, bits_stored=12)
    ds.compress(RLELossless)
    fragment = bytearray(next(generate_fragments(ds.PixelData)))
    fragment[:4] = struct.pack("<I", 15)  # header claims 15 segments; 16-bit gray has 2
    ds.PixelData = encapsulate([bytes(fragment)])
    return save(ds, tmp / "rle.dcm")


def _text_file(tmp: Path, build, save) -> Path:
    path = tmp / "notes.dcm"
    path.write_text("PatientName: Plantedname\n" * 9)
    return path


def _empty_file(tmp: Path, build, save) -> Path:
    path = tmp / "zero.dcm"
    path.write_bytes(b"")
    return path


def _corrupt_j2k(tmp: Path, build, save) -> Path:
    ds = build(np.tile(PIXELS, (8, 8)), bits_stored=12)  # J2K needs room for its resolutions
    ds.compress(JPEG2000Lossless)
    data = bytearray(ds.PixelData)
    data[40:] = bytes(len(data) - 40)
    ds.PixelData = bytes(data)
    return save(ds, tmp / "j2k.dcm")


CASES: dict[str, tuple[BadFile, str]] = {
    "missing file": (lambda tmp, b, s: tmp / "nope.dcm", "does not exist"),
    "directory": (lambda tmp, b, s: tmp, "directory"),
    "zero bytes": (_empty_file, "empty"),
    "text file": (_text_file, "not a DICOM file"),
    "truncated pixels": (
        lambda tmp, b, s: _truncate(_valid(tmp, b, s), 0.93),
        "PixelData|truncated",
    ),
    "truncated header": (
        lambda tmp, b, s: _truncate(_valid(tmp, b, s), 0.25),
        "corrupt|truncated|PixelData|missing",
    ),
    "no PixelData": (_edited(PixelData=None), "no PixelData"),
    "rows vs length": (_edited(Rows=60), "PixelData holds"),
    "extra frames": (_edited(Columns=4), "more than"),
    "zero rows": (_edited(Rows=0), "Rows is 0"),
    "absurd size": (
        _edited(Rows=65535, Columns=65535, NumberOfFrames=5000),
        "absurd|NumberOfFrames",
    ),
    "bits allocated": (_edited(BitsAllocated=12), "BitsAllocated"),
    "bits stored": (_edited(BitsStored=17), "BitsStored"),
    "samples": (_edited(SamplesPerPixel=3), "SamplesPerPixel"),
    "photometric": (_edited(PhotometricInterpretation="HSV"), "PhotometricInterpretation"),
    "missing rows": (_edited(Rows=None), "Rows is missing"),
    "frames text": (_broken_value("NumberOfFrames", "IS", "1A"), "NumberOfFrames"),
    "frames zero": (_broken_value("NumberOfFrames", "IS", "0"), "NumberOfFrames is 0"),
    "slope text": (_broken_value("RescaleSlope", "DS", "abc"), "Rescale"),
    "slope zero": (_broken_value("RescaleSlope", "DS", "0"), "Rescale"),
    "no decoder": (_syntax("1.2.840.10008.1.2.4.100"), "no pixel decoder"),
    "unknown syntax": (_syntax("1.2.3.4.5.6"), "no pixel decoder"),
    "not encapsulated": (_syntax(JPEG2000Lossless), "not encapsulated"),
    "corrupt RLE": (_corrupt_rle, "could not be decoded"),
    "corrupt J2K": (_corrupt_j2k, "could not be decoded|decoded"),
}


@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_named_plain_error(
    case, decode, tmp_path, build_dataset, save_dataset, planted_phi
) -> None:
    make, reason = CASES[case]
    path = make(tmp_path, build_dataset, save_dataset)
    header_only_ok = case in {"slope text", "slope zero", "corrupt RLE", "corrupt J2K"}
    if not decode and header_only_ok:
        assert read_dicom(path, decode=False).pixels is None  # only decoding can find these
        return
    with pytest.raises(DicomReadError, match=reason) as info:
        read_dicom(path, decode=decode)
    _assert_clean_error(info.value, path, planted_phi)


def test_header_only_read_finds_truncation_without_reading_pixels(
    tmp_path, build_dataset, save_dataset
) -> None:
    big = np.tile(PIXELS, (40, 30))  # 240 x 240: large enough for the header read to defer it
    path = _truncate(save_dataset(build_dataset(big, bits_stored=12), tmp_path / "big.dcm"), 0.9)
    with pytest.raises(DicomReadError, match="file is truncated: PixelData declares 115200 bytes"):
        read_dicom(path, decode=False)  # PixelData deferred: its length is checked against the file
    with pytest.raises(DicomReadError, match="PixelData holds"):
        read_dicom(path)


def test_pydicom_truncated_file_is_rejected_from_the_header() -> None:
    path = get_testdata_file("MR_truncated.dcm")
    for decode in (True, False):
        with pytest.raises(DicomReadError, match="PixelData holds 8130 bytes"):
            read_dicom(path, decode=decode)


def test_error_pickles_across_processes() -> None:
    err = DicomReadError("/data/x.dcm", "file is empty (0 bytes)")
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.path, clone.reason, str(clone)) == (err.path, err.reason, str(err))


def test_bad_arguments_are_value_errors(tmp_path, build_dataset, save_dataset) -> None:
    path = _valid(tmp_path, build_dataset, save_dataset)
    with pytest.raises(ValueError):
        read_dicom(path, window_index=-1)
    with pytest.raises(ValueError):
        read_dicom(path, color="cmyk")


FUZZ_TEXT = st.sampled_from(["", "0", "1", "2", "-1", "1A", "nan", "inf", "1e9", "3\\4", "  7 "])
FUZZ_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda v: f"{v:.6g}"[:16]),
    FUZZ_TEXT,
)
US_VALUE = st.one_of(st.sampled_from([0, 1, 3, 8, 12, 16, 32, 64, 65535]), st.integers(0, 65535))
FUZZ_FIELDS = {
    "Rows": ("US", US_VALUE),
    "Columns": ("US", US_VALUE),
    "BitsAllocated": ("US", US_VALUE),
    "BitsStored": ("US", US_VALUE),
    "PixelRepresentation": ("US", st.integers(0, 3)),
    "SamplesPerPixel": ("US", st.integers(0, 4)),
    "PlanarConfiguration": ("US", st.integers(0, 2)),
    "NumberOfFrames": ("IS", FUZZ_TEXT),
    "PhotometricInterpretation": (
        "CS",
        st.sampled_from(
            [
                "MONOCHROME1",
                "MONOCHROME2",
                "RGB",
                "YBR_FULL",
                "YBR_FULL_422",
                "PALETTE COLOR",
                "YBR_PARTIAL_420",
                "",
                "GARBAGE",
            ]
        ),
    ),
    "WindowCenter": ("DS", FUZZ_NUMBER),
    "WindowWidth": ("DS", FUZZ_NUMBER),
    "RescaleSlope": ("DS", FUZZ_NUMBER),
    "RescaleIntercept": ("DS", FUZZ_NUMBER),
    "PresentationLUTShape": ("CS", st.sampled_from(["IDENTITY", "INVERSE", "", "X"])),
    "VOILUTFunction": ("CS", st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "", "X"])),
}


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.dictionaries(st.sampled_from(sorted(FUZZ_FIELDS)), st.data(), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 400)),
    frames=st.integers(1, 3),
)
def test_fuzzed_headers_only_ever_raise_dicom_read_error(
    edits, cut, frames, tmp_path, build_dataset, save_dataset, planted_phi
) -> None:
    ds = build_dataset(np.stack([PIXELS] * frames) if frames > 1 else PIXELS, bits_stored=12)
    path = save_dataset(ds, tmp_path / "fuzz.dcm")
    planted = {}
    for keyword, data in edits.items():
        vr, strategy = FUZZ_FIELDS[keyword]
        planted[keyword] = (vr, data.draw(strategy))
    _plant(path, planted)
    if cut is not None:
        path.write_bytes(path.read_bytes()[: max(0, path.stat().st_size - cut)])
    for decode in (False, True):
        try:
            image = read_dicom(path, decode=decode)
        except DicomReadError as err:
            _assert_clean_error(err, path, planted_phi)
            event(f"decode={decode}: DicomReadError")
            continue
        event(f"decode={decode}: read")
        assert isinstance(image, DicomImage)
        if decode:
            assert image.pixels.dtype == np.float32 and np.isfinite(image.pixels).all()
            assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
