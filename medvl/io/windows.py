"""Grayscale value transforms of the DICOM display pipeline: modality LUT, VOI, presentation.

PS3.3 C.11 defines the chain stored values -> modality LUT (rescale or LUT) -> VOI (window or
LUT) -> presentation (MONOCHROME1 / INVERSE). Each step here is a small pure function on numpy
arrays so the reader can apply them per frame (Enhanced CT/MR keep rescale and window per frame
in functional groups, which ``pydicom.pixels.apply_modality_lut`` ignores).

Errors raised here are ``ValueError`` with a plain-words reason; the reader wraps them into
``DicomReadError`` with the file name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CT_WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
"""Common CT windows as (center, width) in HU."""

VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True, eq=False)
class Lut:
    """A DICOM lookup table: input values from ``first_mapped`` index ``table``."""

    first_mapped: int
    table: np.ndarray
    bits: int

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Map ``values``; inputs below/above the table take its first/last entry (PS3.3 C.11)."""
        index = np.rint(values).astype(np.int64) - self.first_mapped
        np.clip(index, 0, len(self.table) - 1, out=index)
        return self.table[index]

    @property
    def output_max(self) -> float:
        """Largest value the table can produce according to its descriptor."""
        nominal = float(2**self.bits - 1)
        return max(nominal, float(self.table.max()))


def read_lut(item: object, little_endian: bool, signed_input: bool) -> Lut:
    """Build a :class:`Lut` from a Modality or VOI LUT Sequence item.

    Parameters
    ----------
    item
        A pydicom ``Dataset`` with LUTDescriptor and LUTData.
    little_endian
        Byte order of the file, for LUTData stored as OW bytes.
    signed_input
        Whether the LUT's input values may be negative: then a first-mapped value stored as an
        unsigned 16-bit number is read as two's complement (PS3.3 C.11.1.1.1).
    """
    descriptor = getattr(item, "LUTDescriptor", None)
    data = getattr(item, "LUTData", None)
    if descriptor is None or data is None or len(descriptor) != 3:
        raise ValueError("a LUT item lacks a 3-valued LUTDescriptor or LUTData")
    entries, first, bits = (int(v) for v in descriptor)
    entries = entries or 2**16
    if signed_input and first >= 2**15:
        first -= 2**16
    if not 1 <= bits <= 16:
        raise ValueError(f"LUTDescriptor declares {bits} bits per entry; 1 to 16 are allowed")
    if isinstance(data, (bytes, bytearray)):
        dtype = np.dtype("<u2" if little_endian else ">u2")
        if bits <= 8 and len(data) == entries:
            dtype = np.dtype(np.uint8)
        table = np.frombuffer(bytes(data[: len(data) - len(data) % dtype.itemsize]), dtype=dtype)
    else:
        values = [data] if isinstance(data, (int, float)) else list(data)
        table = np.asarray(values, dtype=np.int64)
    if len(table) < entries:
        raise ValueError(f"LUTData holds {len(table)} entries; its descriptor declares {entries}")
    return Lut(first, np.asarray(table[:entries], dtype=np.float32), bits)


def resolve_window(window: tuple[float, float] | str) -> tuple[float, float, str]:
    """Validate a configured window and return (center, width, label).

    A string names a CT preset (``"lung"``, ``"mediastinum"``, ``"bone"``, ``"brain"``); the label
    becomes ``"preset:<name>"``. Raises ``ValueError`` for unknown names or a width <= 0.
    """
    if isinstance(window, str):
        key = window.strip().lower()
        if key not in CT_WINDOW_PRESETS:
            known = ", ".join(sorted(CT_WINDOW_PRESETS))
            raise ValueError(f"unknown window preset {window!r}; known presets: {known}")
        center, width = CT_WINDOW_PRESETS[key]
        return center, width, f"preset:{key}"
    center, width = (float(v) for v in window)
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise ValueError(f"window width must be a finite number > 0, got {width}")
    return center, width, "window"


def window_is_valid(width: float, function: str) -> bool:
    """Whether ``width`` is allowed for ``function`` (LINEAR needs >= 1, the others > 0)."""
    if not np.isfinite(width):
        return False
    return width >= 1 if function == "LINEAR" else width > 0


@dataclass(frozen=True)
class Affine:
    """``x -> x * scale + offset``: rescale, linear windows and inversion are all of this form,
    so the common chain collapses into one multiply-add pass over the pixels."""

    scale: float
    offset: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        wide = values.dtype.itemsize >= 4 and values.dtype.kind in "iuf"
        dtype = np.float64 if wide or values.dtype == np.float64 else np.float32
        out = values.astype(dtype)  # then in place: faster than a casting multiply
        if self.scale != 1:
            out *= dtype(self.scale)
        if self.offset != 0:
            out += dtype(self.offset)
        return out if dtype == np.float32 else out.astype(np.float32)


@dataclass(frozen=True)
class Sigmoid:
    """The SIGMOID VOI function of PS3.3 C.11.2.1.3.1, output in (0, 1)."""

    center: float
    width: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        x = values.astype(np.float32, copy=False)
        out = np.exp(-4.0 * (x - np.float32(self.center)) / np.float32(self.width))
        return np.reciprocal(out + np.float32(1.0), out=out)


@dataclass(frozen=True)
class Threshold:
    """A LINEAR window of width 1: a step at ``center - 0.5``."""

    center: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (values > self.center - 0.5).astype(np.float32)


@dataclass(frozen=True)
class Chain:
    """Steps applied in order."""

    steps: tuple[Step, ...]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        for step in self.steps:
            values = step(values)
        return values


Step = Affine | Sigmoid | Threshold | Lut | Chain


def compose(*steps: Step) -> Step:
    """Chain steps, merging neighbouring affine steps into one."""
    merged: list[Step] = []
    for step in steps:
        if merged and isinstance(merged[-1], Affine) and isinstance(step, Affine):
            first = merged[-1]
            step = Affine(first.scale * step.scale, first.offset * step.scale + step.offset)
            merged[-1] = step
        else:
            merged.append(step)
    return merged[0] if len(merged) == 1 else Chain(tuple(merged))


IDENTITY = Affine(1.0, 0.0)
INVERT = Affine(-1.0, 1.0)


def window_step(center: float, width: float, function: str = "LINEAR") -> Step:
    """The VOI window as a step to [0, 1] before clipping (PS3.3 C.11.2.1.2).

    LINEAR uses the standard's ``c - 0.5`` / ``w - 1`` form (a width of 1 is a threshold),
    LINEAR_EXACT maps ``[c - w/2, c + w/2]`` linearly, and SIGMOID is
    ``1 / (1 + exp(-4 (x - c) / w))``.
    """
    if function == "SIGMOID":
        return Sigmoid(center, width)
    if function == "LINEAR_EXACT":
        low, scale = center - width / 2.0, 1.0 / width
    elif width == 1:
        return Threshold(center)
    else:
        low, scale = center - 0.5 - (width - 1) / 2.0, 1.0 / (width - 1)
    return Affine(scale, -low * scale)


def range_step(low: float, high: float) -> Affine:
    """Min-max scaling of ``[low, high]`` to [0, 1]; a constant image maps to 0, never NaN."""
    if not high > low:
        return Affine(0.0, 0.0)
    return Affine(1.0 / (high - low), -low / (high - low))


def apply_window(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Map modality values through a VOI window to float32 in [0, 1]."""
    out = window_step(center, width, function)(values)
    return np.clip(out, 0.0, 1.0, out=out)


def pick_value(values: object, index: int) -> float:
    """Return value ``index`` of a possibly multi-valued numeric DICOM element.

    Raises ``IndexError`` when the element holds fewer values than ``index + 1``.
    """
    if isinstance(values, Sequence) and not isinstance(values, str):
        return float(list(values)[index])
    return float([values][index])


def rescale_params(slope: object, intercept: object) -> tuple[float, float] | None:
    """Validate RescaleSlope/RescaleIntercept values; ``None`` when both are absent."""
    if slope is None and intercept is None:
        return None
    s = 1.0 if slope is None else pick_value(slope, 0)
    b = 0.0 if intercept is None else pick_value(intercept, 0)
    if not (np.isfinite(s) and np.isfinite(b)) or s == 0:
        raise ValueError(f"RescaleSlope {s} / RescaleIntercept {b} are not a usable rescale")
    return s, b
