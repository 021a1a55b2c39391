"""Open a DICOM file, validate its Image Pixel module and decode it with a pinned plugin.

This is the half of the reader that decides whether a file is usable at all, so batch ingest can
reject broken files from the header alone (``read_dicom(..., decode=False)``). Every problem is a
:class:`DicomReadError` whose reason is written here in plain words; messages quote attribute
names and numbers, never attribute values that could be PHI.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from medvl.io.codecs.plugins import plugin_order

logger = logging.getLogger(__name__)

MAX_DIMENSION = 65535
MAX_FRAMES = 100_000
MAX_VALUES = 2**30  # rows x columns x frames x samples: 4 GiB as float32
MAX_FRAME_PIXELS = 10_000 * 10_000  # Rows x Columns; radiographs are at most ~5,000 px a side
MAX_DECODED_BYTES = 2 * 1024**3  # what decoding would allocate, checked before it does
DEFER_BYTES = 64 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
PHOTOMETRIC_SAMPLES = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_PARTIAL_420": 3,
    "YBR_PARTIAL_422": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
}


class DicomReadError(Exception):
    """A DICOM file could not be read; ``str(err)`` is ``"<path>: <reason>"``.

    The reason is plain words for the person reading the log and never contains PHI.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        """Pickle by (path, reason) so errors cross process-pool boundaries intact."""
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class PixelHeader:
    """The validated Image Pixel module facts the decoder and pipeline rely on."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    transfer_syntax: UID
    little_endian: bool


def load_dataset(path: str, defer_pixels: bool) -> Dataset:
    """Read the dataset, with bulk values deferred when only the header is wanted.

    Files without the 128-byte preamble and ``DICM`` marker are accepted only if a forced read
    finds an image header in them.
    """
    if not os.path.exists(path):
        raise DicomReadError(path, "file does not exist")
    if os.path.isdir(path):
        raise DicomReadError(path, "is a directory, not a file")
    if not os.path.isfile(path):  # opening a FIFO for reading blocks until a writer comes
        raise DicomReadError(path, "not a regular file (a pipe, device or socket); not opened")
    if os.path.getsize(path) == 0:
        raise DicomReadError(path, "file is empty (0 bytes)")
    defer = DEFER_BYTES if defer_pixels else None
    try:
        ds = pydicom.dcmread(path, defer_size=defer)
    except InvalidDicomError:
        ds = _forced_read(path, defer)
    except PermissionError as exc:
        raise DicomReadError(path, "file cannot be read: permission denied") from exc
    except Exception as exc:
        raise DicomReadError(
            path, f"the DICOM header is corrupt or truncated ({type(exc).__name__})"
        ) from exc
    _ensure_transfer_syntax(ds)
    return ds


def _forced_read(path: str, defer: int | None) -> Dataset:
    try:
        ds = pydicom.dcmread(path, force=True, defer_size=defer)
        looks_like_image = any(k in ds for k in ("PixelData", "Rows", "SOPClassUID"))
    except Exception:
        looks_like_image = False
    if not looks_like_image:
        raise DicomReadError(path, "not a DICOM file (no DICM marker and no image header found)")
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Files without File Meta get the transfer syntax their encoding was read with."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = True, True
    if implicit:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax


def _int_attr(
    ds: Dataset, keyword: str, path: str, low: int, high: int, default: int | None = None
) -> int:
    """An integer attribute in ``[low, high]``; missing means ``default`` or an error."""
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise DicomReadError(path, f"{keyword} cannot be parsed") from exc
    if value is None or value == "":
        if default is None:
            raise DicomReadError(path, f"{keyword} is missing")
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        raise DicomReadError(path, f"{keyword} holds several values; one is required")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise DicomReadError(path, f"{keyword} is not a number") from exc
    if not math.isfinite(number) or number != int(number):
        raise DicomReadError(path, f"{keyword} is not a whole number")
    if not low <= int(number) <= high:
        raise DicomReadError(path, f"{keyword} is {int(number)}; it must be {low} to {high}")
    return int(number)


def validate_pixel_header(ds: Dataset, path: str) -> PixelHeader:
    """Check the Image Pixel module is complete, sane and matches the PixelData length.

    Runs without touching deferred pixel bytes, so it is cheap enough for batch ingest.
    """
    if "PixelData" not in ds:
        for keyword in ("FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                raise DicomReadError(path, f"holds {keyword}, which medvl does not read")
        sop_class = UID(str(ds.get("SOPClassUID", "") or ""))
        kind = f" (SOP class: {sop_class.name})" if sop_class else ""
        if _ends_inside_an_element(ds, path):
            raise DicomReadError(path, "file is truncated: it ends inside the header")
        if "Rows" in ds or str(sop_class.name).endswith("Image Storage"):
            raise DicomReadError(
                path,
                f"has no PixelData element although its header describes an image{kind}: "
                "the file is truncated before the pixel data, or the pixels were removed",
            )
        raise DicomReadError(path, f"has no PixelData element; it is not an image{kind}")
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError):
        decoder = None
    if decoder is None:
        raise DicomReadError(
            path, f"transfer syntax {syntax.name or syntax} has no pixel decoder in pydicom"
        )
    if not decoder.is_available:
        raise DicomReadError(
            path, f"transfer syntax {syntax.name} needs a decoding plugin that is not installed"
        )
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric not in PHOTOMETRIC_SAMPLES:
        label = "missing" if not photometric else "not a known value"
        raise DicomReadError(path, f"PhotometricInterpretation is {label}")
    header = PixelHeader(
        rows=_int_attr(ds, "Rows", path, 1, MAX_DIMENSION),
        columns=_int_attr(ds, "Columns", path, 1, MAX_DIMENSION),
        frames=_int_attr(ds, "NumberOfFrames", path, 1, MAX_FRAMES, default=1),
        samples=_int_attr(ds, "SamplesPerPixel", path, 1, 3),
        bits_allocated=_int_attr(ds, "BitsAllocated", path, 1, 32),
        bits_stored=_int_attr(ds, "BitsStored", path, 1, 32),
        pixel_representation=_int_attr(ds, "PixelRepresentation", path, 0, 1),
        photometric=photometric,
        transfer_syntax=syntax,
        little_endian=bool(syntax.is_little_endian),
    )
    _check_consistency(ds, path, header)
    _check_pixel_length(ds, path, header, decoder.is_native)
    return header


def _check_consistency(ds: Dataset, path: str, h: PixelHeader) -> None:
    if h.bits_allocated not in (1, 8, 16, 32):
        raise DicomReadError(path, f"BitsAllocated is {h.bits_allocated}; 1, 8, 16 or 32 expected")
    if h.bits_stored > h.bits_allocated:
        raise DicomReadError(
            path, f"BitsStored {h.bits_stored} exceeds BitsAllocated {h.bits_allocated}"
        )
    if h.samples not in (1, 3) or PHOTOMETRIC_SAMPLES[h.photometric] != h.samples:
        raise DicomReadError(
            path,
            f"SamplesPerPixel {h.samples} does not fit PhotometricInterpretation {h.photometric}",
        )
    if h.samples == 3:
        ds.PlanarConfiguration = _int_attr(ds, "PlanarConfiguration", path, 0, 1, default=0)
    frame_pixels = h.rows * h.columns
    if frame_pixels > MAX_FRAME_PIXELS:
        raise DicomReadError(
            path,
            f"Rows x Columns = {h.rows} x {h.columns} = {frame_pixels:,} pixels, more than the "
            f"{MAX_FRAME_PIXELS:,} limit (absurd dimensions); refused before decoding",
        )
    values = h.rows * h.columns * h.frames * h.samples
    decoded = values * max(1, h.bits_allocated // 8)
    if decoded > MAX_DECODED_BYTES:
        raise DicomReadError(
            path,
            f"decoding would need {decoded:,} bytes (Rows x Columns x NumberOfFrames x "
            f"SamplesPerPixel x BitsAllocated), more than the {MAX_DECODED_BYTES:,} limit "
            "(absurd dimensions); refused before decoding",
        )
    if values > MAX_VALUES:
        raise DicomReadError(
            path,
            f"Rows x Columns x NumberOfFrames x SamplesPerPixel = {values:,} values, "
            f"more than the {MAX_VALUES:,} limit (absurd dimensions)",
        )


def _ends_inside_an_element(ds: Dataset, path: str) -> bool:
    """Whether the last element read claims more bytes than the file holds (a cut file).

    pydicom stops quietly at the end of a file cut inside the header; the last element's
    offset and length tell.
    """
    if not len(ds):
        return False
    element = ds.get_item(list(ds.keys())[-1], keep_deferred=True)
    start, length = getattr(element, "value_tell", None), getattr(element, "length", None)
    if start is None or length in (None, UNDEFINED_LENGTH):
        return False
    return int(start) + int(length) > os.path.getsize(path)


def _check_pixel_length(ds: Dataset, path: str, h: PixelHeader, native: bool) -> None:
    element = ds.get_item("PixelData", keep_deferred=True)
    undefined = bool(getattr(element, "is_undefined_length", False))
    undefined = undefined or getattr(element, "length", None) == UNDEFINED_LENGTH  # raw, deferred
    value = element.value
    if not native:
        if not undefined and not (value and bytes(value[:4]) == b"\xfe\xff\x00\xe0"):
            raise DicomReadError(
                path,
                f"transfer syntax {h.transfer_syntax.name} is compressed but PixelData "
                "is not encapsulated",
            )
        return
    if undefined:
        raise DicomReadError(path, "PixelData is encapsulated but the transfer syntax is native")
    length = len(value) if value is not None else int(element.length)
    expected = get_expected_length(ds)
    if value is None:
        _check_not_truncated(ds, path, element, length)
    if length < expected:
        raise DicomReadError(
            path,
            f"PixelData holds {length} bytes; Rows x Columns x NumberOfFrames x "
            f"SamplesPerPixel x BitsAllocated needs {expected}",
        )
    frame_bytes = max(2, expected // h.frames)
    if length - expected >= frame_bytes:
        raise DicomReadError(
            path,
            f"PixelData holds {length} bytes, at least one frame more than the "
            f"{expected} that NumberOfFrames {h.frames} declares",
        )


def _check_not_truncated(ds: Dataset, path: str, element: object, length: int) -> None:
    """A deferred PixelData must fit in the file (deflated files are inflated in memory)."""
    if ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return
    start = getattr(element, "value_tell", None)
    if start is None:
        return
    available = os.path.getsize(path) - int(start)
    if length > available:
        raise DicomReadError(
            path,
            f"file is truncated: PixelData declares {length} bytes but only "
            f"{max(available, 0)} remain",
        )


def decode_pixels(ds: Dataset, path: str, h: PixelHeader) -> tuple[np.ndarray, dict, str]:
    """Decode all frames; returns (array, pixel properties, name of the plugin that decoded).

    Plugins are tried one at a time in the measured order of
    :data:`medvl.io.codecs.plugins.PLUGIN_ORDER` so the record of which decoded is exact.
    """
    decoder = get_decoder(h.transfer_syntax)
    options: dict[str, bool] = {}
    if decoder.is_native:
        attempts = [("native", "")]
        # The pipeline copies anyway, so skip pydicom's copy; a view is impossible (and pydicom
        # warns on every file) when unused high bits must be masked off.
        options["view_only"] = h.bits_stored == h.bits_allocated
    else:
        attempts = [(p, p) for p in plugin_order(h.transfer_syntax, decoder.available_plugins)]
    failures = []
    for name, plugin in attempts:
        try:
            arr, props = decoder.as_array(ds, decoding_plugin=plugin, **options)
        except Exception as exc:
            failures.append(f"{name}: {_plugin_failure(exc)}")
            continue
        expected = h.rows * h.columns * h.frames * h.samples
        if arr.size != expected:
            raise DicomReadError(
                path, f"decoded {arr.size} values but the header describes {expected}"
            )
        return arr, props, name
    what = h.transfer_syntax.name or str(h.transfer_syntax)
    tried = "; ".join(failures)
    raise DicomReadError(path, f"the {what} pixel data could not be decoded ({tried})")


def _plugin_failure(exc: Exception) -> str:
    """The plugin's own words, without pydicom's 'all plugins failed' preamble, kept short."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Unable to decode"):
        lines = [line.split(": ", 1)[-1] for line in lines[1:]]
    text = " ".join(lines)[:200]
    return text or type(exc).__name__


def float_tuple(value: object, n: int) -> tuple[float, ...] | None:
    """``n`` finite floats from a (multi-)value element, else ``None`` (never raises)."""
    if value is None or value == "":
        return None
    try:
        items = [value] if isinstance(value, (int, float, str)) else list(value)
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None
    if len(numbers) != n or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def optional_int(value: object) -> int | None:
    """An integer from an IS/US element, else ``None`` (never raises)."""
    numbers = float_tuple(value, 1)
    return int(numbers[0]) if numbers else None


def pixel_spacing(ds: Dataset, measures: Dataset | None) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, the frame's Pixel Measures, ImagerPixelSpacing."""
    sources = [ds.get("PixelSpacing")]
    if measures is not None:
        sources.append(measures.get("PixelSpacing"))
    sources.append(ds.get("ImagerPixelSpacing"))
    for value in sources:
        pair = float_tuple(value, 2)
        if pair is not None and pair[0] > 0 and pair[1] > 0:
            return (pair[0], pair[1])
    return None
