"""The pydicom decoding plugin tried first for each transfer syntax, chosen by measurement.

Measured with ``python bench/decoders.py`` (one 2,500 x 2,000 radiograph, 12 bits stored in 16,
8 bits for the 8-bit JPEG processes; one process, one thread; best of 5 decodes; every lossless
plugin checked bit-exact against the source pixels):

=====================================  =======================================  ==============
transfer syntax                        CPU ms per decode, fastest first         tried first
=====================================  =======================================  ==============
RLE Lossless (1.2.5)                   pylibjpeg 27, pydicom 190                pylibjpeg
JPEG Lossless SV1 (.4.70)              gdcm 200, pylibjpeg 219                  gdcm
JPEG Lossless (.4.57)                  gdcm 188, pylibjpeg 221                  gdcm
JPEG-LS Lossless (.4.80)               pyjpegls 137, gdcm 255, pylibjpeg 724    pyjpegls
JPEG-LS Near-Lossless (.4.81)          pyjpegls 147, gdcm 249, pylibjpeg 649    pyjpegls
JPEG 2000 Lossless (.4.90)             pillow 860, pylibjpeg 937, gdcm 1094     pillow
JPEG 2000 (.4.91, 20:1)                pylibjpeg 140, pillow 142, gdcm 228      pylibjpeg
HTJ2K Lossless (.4.201)                imagecodecs 45, pylibjpeg 90             imagecodecs
HTJ2K Lossless RPCL (.4.202)           imagecodecs 41, pylibjpeg 93             imagecodecs
HTJ2K (.4.203)                         imagecodecs 43, pylibjpeg 93             imagecodecs
JPEG Extended 12-bit (.4.51)           pylibjpeg 185 (gdcm, pillow refuse it)   pylibjpeg
JPEG Baseline 8-bit (.4.50)            pillow 16, gdcm 60, pylibjpeg 69         pillow
=====================================  =======================================  ==============

Plugins within a few percent of each other swap places between runs on a busy machine (JPEG
2000 lossless: pillow and pylibjpeg, both openjpeg 2.5, ranked either way in three runs; gdcm
was the slowest in all three). Lossy JPEG 2000 keeps pylibjpeg, the plugin pinned before this
table, because its tie with pillow is not worth changing the lossy pixels of existing files.

The fastest plugin that decoded the image correctly comes first; the rest follow in measured
order, so a file that one plugin refuses is still read, and ``DicomImage.decoder`` records which
plugin decoded it (lossy decodes differ slightly between plugins). Syntaxes not in the table use
:data:`DEFAULT_ORDER`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from pydicom import uid
from pydicom.pixels import get_decoder

from medvl.io.codecs.gpu import GPU_FIRST
from medvl.io.codecs.htj2k_plugin import HTJ2K_SYNTAXES

DEFAULT_ORDER = ("pylibjpeg", "gdcm", "pydicom", "pyjpegls", "pillow")
"""Order for syntaxes the table does not list (pydicom's own order puts gdcm first)."""

PLUGIN_ORDER: dict[str, tuple[str, ...]] = {
    uid.RLELossless: ("pylibjpeg", "pydicom"),
    uid.JPEGLosslessSV1: ("gdcm", "pylibjpeg"),
    uid.JPEGLossless: ("gdcm", "pylibjpeg"),
    uid.JPEGLSLossless: ("pyjpegls", "gdcm", "pylibjpeg"),
    uid.JPEGLSNearLossless: ("pyjpegls", "gdcm", "pylibjpeg"),
    uid.JPEG2000Lossless: ("pillow", "pylibjpeg", "gdcm"),
    uid.JPEG2000: ("pylibjpeg", "pillow", "gdcm"),
    uid.HTJ2KLossless: ("imagecodecs", "pylibjpeg"),
    uid.HTJ2KLosslessRPCL: ("imagecodecs", "pylibjpeg"),
    uid.HTJ2K: ("imagecodecs", "pylibjpeg"),
    uid.JPEGExtended12Bit: ("pylibjpeg", "gdcm", "pillow"),
    uid.JPEGBaseline8Bit: ("pillow", "gdcm", "pylibjpeg"),
}
"""Plugins per transfer syntax UID, fastest measured first."""


def plugin_order(syntax: str, available: Iterable[str]) -> list[str]:
    """The ``available`` plugins for ``syntax`` in the order to try them.

    With :func:`medvl.io.codecs.gpu.enable_gpu_decoding` in force, nvImageCodec comes first.
    """
    available = list(available)
    gpu = (GPU_FIRST[str(syntax)],) if str(syntax) in GPU_FIRST else ()
    preferred = (*gpu, *PLUGIN_ORDER.get(str(syntax), DEFAULT_ORDER))
    ordered = [p for p in preferred if p in available]
    return ordered + [p for p in available if p not in ordered]


def register_plugins() -> None:
    """Add the imagecodecs HTJ2K plugin to pydicom's decoders (idempotent)."""
    for syntax in HTJ2K_SYNTAXES:
        with contextlib.suppress(ValueError):  # raised when the label is already registered
            get_decoder(syntax).add_plugin(
                "imagecodecs", ("medvl.io.codecs.htj2k_plugin", "decode_frame")
            )


register_plugins()
