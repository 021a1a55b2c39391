"""Decode JPEG 2000 / HTJ2K radiographs at the resolution level a small target needs.

A JPEG 2000 codestream is a wavelet pyramid: resolution level ``r`` is the image at 1 / 2**r,
and openjpeg's ``reduce`` decodes only the sub-bands up to it. A 2,500 x 2,000 radiograph bound
for a 512-px tower needs level 2 (625 x 500): about 1/16 of the entropy decoding. Candidates
measured side by side on that image, level 2 / full decode, one thread (glymur installed for
the comparison only; ``python bench/decoders.py`` repeats the Pillow and imagecodecs rows):

==================================  ===================  =====================
decoder                             JPEG 2000 lossless   HTJ2K lossless
==================================  ===================  =====================
Pillow (openjpeg 2.5.4, ``reduce``)  54 ms / 889 ms       9.0 ms / 111 ms
glymur (system openjpeg 2.5.0)       56 ms / 856 ms       9.6 ms / 113 ms
imagecodecs HTJ2K (``skipres``)      --                   2.3 ms / 40 ms
==================================  ===================  =====================

Pillow is used for both: it reads the codestream from memory (glymur needs a file and a system
libopenjp2, for the same speed and identical pixels), and openjpeg clamps the reduced image to
the codestream's range, while OpenJPH's ``skipres`` wraps the low-pass band's undershoot below
zero around to 65,535 (a black pixel turned white). The reduced pixels are the wavelet's low-pass
band, not an area average, and sit on JPEG 2000's sample grid, (2**level - 1) / 2 stored pixels
before the block centres an area resize uses; :func:`_to_pixel_centres` moves them there, and
after the final resize the image equals full decode + resize to within the resize tolerance
(the 5/3 low-pass lets through more noise than a box average, and openjpeg's integer lifting
rounds a reduced level up by about one stored value: nothing at 12 bits, 0.4% at 8), not bit
for bit.

Only the common radiograph case takes this path: MONOCHROME1/2, unsigned, a raw
codestream (no JP2 wrapper), a target at least twice smaller than the image. Anything else, or
any failure, returns ``None`` and the caller decodes in full (where errors are reported).
"""

from __future__ import annotations

import io
import logging
import math
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

__all__ = ["REDUCIBLE_SYNTAXES", "Reduced", "TargetSize", "decode_reduced", "reduction_level"]

logger = logging.getLogger(__name__)

REDUCIBLE_SYNTAXES = (
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
)
TargetSize = int | tuple[int, int]
"""The size a caller resizes to: an int is the longest side (aspect kept), a pair is (rows,
columns), as in MONAI's ``Resize(size_mode="longest" | "all")``."""


@dataclass(frozen=True)
class Reduced:
    """Frames decoded at ``1 / 2**level`` of the stored size: (frames, rows, columns)."""

    pixels: np.ndarray
    level: int
    plugin: str = "pillow"


def reduction_level(rows: int, columns: int, target: TargetSize, levels: int) -> int:
    """The highest level ``<= levels`` whose image (ceil(side / 2**r)) still covers ``target``."""
    for level in range(levels, 0, -1):
        r, c = math.ceil(rows / 2**level), math.ceil(columns / 2**level)
        covers = (
            max(r, c) >= target if isinstance(target, int) else r >= target[0] and c >= target[1]
        )
        if covers:
            return level
    return 0


def _codestream_facts(stream: bytes) -> tuple[int, int, bool, int] | None:
    """(components, precision, signed, decomposition levels) from SIZ and COD, or None."""
    if stream[:4] != b"\xff\x4f\xff\x51":
        return None
    (components,) = struct.unpack(">H", stream[40:42])
    ssiz = stream[42]
    position = 4 + struct.unpack(">H", stream[4:6])[0]
    while position + 4 <= len(stream):
        marker, length = struct.unpack(">HH", stream[position : position + 4])
        if marker == 0xFF52:  # COD: Scod, progression, layers (2), MCT, then SPcod levels
            levels = stream[position + 9]
            return components, (ssiz & 0x7F) + 1, bool(ssiz & 0x80), levels
        if marker in (0xFF90, 0xFF93):  # SOT / SOD: the main header ended without COD
            return None
        position += 2 + length
    return None


def decode_reduced(ds: Dataset, rows: int, columns: int, target: TargetSize) -> Reduced | None:
    """Decode every frame at the level nearest above ``target``, or ``None`` to decode in full."""
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax not in REDUCIBLE_SYNTAXES or int(ds.get("PixelRepresentation", 0)) != 0:
        return None
    if not str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME"):
        return None  # colour and palette images decode in full
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        streams = list(generate_frames(ds.PixelData, number_of_frames=frames))
        facts = _codestream_facts(streams[0])
        if facts is None:
            return None
        components, precision, signed, levels = facts
        if components != 1 or signed or precision > 16:
            return None
        level = reduction_level(rows, columns, target, levels)
        if level == 0:
            return None
        shift = 16 - precision if precision > 8 else 0  # Pillow scales 9-15 bits up to 16
        pixels = np.stack([_decode(s, level, rows, columns, shift) for s in streams])
    except Exception:  # the full decode reports what is wrong with the file
        logger.debug("reduced decode failed; decoding in full", exc_info=True)
        return None
    return Reduced(pixels=pixels, level=level)


def _decode(stream: bytes, level: int, rows: int, columns: int, shift: int) -> np.ndarray:
    """One codestream at ``level`` through Pillow; values back in stored units."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # sizes checked upstream
        with Image.open(io.BytesIO(stream), formats=["JPEG2000"]) as im:
            if im.size != (columns, rows):
                raise ValueError("codestream size differs from the header")
            im.reduce = level
            im.load()
            arr = np.asarray(im)
    arr = arr >> shift if shift else arr
    return _to_pixel_centres(arr, level)


def _to_pixel_centres(arr: np.ndarray, level: int) -> np.ndarray:
    """Move level-``level`` samples onto the centres of the 2**level-pixel blocks they stand for.

    JPEG 2000 keeps sample ``i`` of a reduced level at full-resolution position ``2**level * i``;
    an area resize of the full image puts output pixel ``i`` at the block centre, ``(2**level -
    1) / 2`` pixels further on. Linear interpolation by that fraction of a reduced pixel (the
    last row and column repeat) removes the shift; rounding keeps stored integers, so lookup
    tables still apply.
    """
    t = (2**level - 1) / 2 ** (level + 1)
    out = arr.astype(np.float32)
    for axis in (0, 1):
        ahead = np.take(out, np.r_[1 : out.shape[axis], out.shape[axis] - 1], axis=axis)
        out = (1 - t) * out + t * ahead
    return np.rint(out).astype(arr.dtype)
