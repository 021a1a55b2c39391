"""Compress a dataset's pixels into a transfer syntax, HTJ2K included.

pydicom 3 encodes RLE, JPEG-LS and JPEG 2000 itself; for the HTJ2K syntaxes it has no encoder, so
frames go through imagecodecs' OpenJPH (reversible 5/3 wavelet, five decomposition levels, RPCL
progression with TLM markers, which is what 1.2.840.10008.1.2.4.202 asks for) and are
encapsulated here. The codestream precision is the container's (16 for 16-bit data); pydicom
and every reader here decode such files by the codestream's precision.
"""

from __future__ import annotations

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from medvl.io.codecs.htj2k_plugin import HTJ2K_SYNTAXES

__all__ = ["WRITABLE_SYNTAXES", "compress"]

WRITABLE_SYNTAXES = (
    uid.RLELossless,
    uid.JPEGLSLossless,
    uid.JPEG2000Lossless,
    *HTJ2K_SYNTAXES,
)
"""The lossless syntaxes :func:`compress` writes (pydicom's encoders, and OpenJPH for HTJ2K)."""


def compress(ds: Dataset, syntax: str) -> Dataset:
    """Compress ``ds`` (native pixels) in place into ``syntax`` losslessly; returns ``ds``.

    Raises ``ValueError`` for a syntax outside :data:`WRITABLE_SYNTAXES`.
    """
    syntax = uid.UID(syntax)
    if syntax not in WRITABLE_SYNTAXES:
        raise ValueError(f"cannot write transfer syntax {syntax.name or syntax} losslessly")
    if syntax not in HTJ2K_SYNTAXES:
        ds.compress(syntax)
        return ds
    import imagecodecs

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if int(ds.SamplesPerPixel) != 1:
        raise ValueError("the HTJ2K writer takes single-sample (grayscale) images only")
    pixels = ds.pixel_array.reshape((frames, int(ds.Rows), int(ds.Columns)))
    encoded = [
        imagecodecs.htj2k_encode(np.ascontiguousarray(frame), reversible=True, tlm=True)
        for frame in pixels
    ]
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    return ds
