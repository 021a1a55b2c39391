"""imagecodecs (OpenJPH) as a pydicom decoding plugin for the three HTJ2K transfer syntaxes.

OpenJPH is the HTJ2K reference implementation; on a 2,500 x 2,000 12-bit radiograph it decodes
~2.7x faster than openjpeg through pylibjpeg (see :mod:`medvl.io.codecs.plugins`). The module
follows pydicom's plugin contract (``DECODER_DEPENDENCIES``, ``is_available``, a frame function)
and is registered by :func:`medvl.io.codecs.plugins.register_plugins` under the label
``"imagecodecs"``.
"""

from __future__ import annotations

from pydicom import uid
from pydicom.pixels.common import PhotometricInterpretation
from pydicom.pixels.decoders.base import DecodeRunner

try:
    import imagecodecs
except ImportError:  # the plugin then reports itself unavailable
    imagecodecs = None

HTJ2K_SYNTAXES = (uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K)
DECODER_DEPENDENCIES = {syntax: ("imagecodecs>=2026.3",) for syntax in HTJ2K_SYNTAXES}


def is_available(syntax: str) -> bool:
    """True for an HTJ2K syntax when imagecodecs was built with OpenJPH."""
    return syntax in HTJ2K_SYNTAXES and imagecodecs is not None and imagecodecs.HTJ2K.available


def decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One HTJ2K codestream -> raw pixel bytes, in the layout pydicom expects of J2K plugins.

    Like pylibjpeg-openjpeg, the container follows the codestream precision and colour comes
    back as RGB samples interleaved by pixel (the codestream's RCT/ICT already undone).
    """
    frame = imagecodecs.htj2k_decode(src, planar=False)  # samples last, with or without MCT
    if runner.photometric_interpretation in (
        PhotometricInterpretation.YBR_ICT,
        PhotometricInterpretation.YBR_RCT,
    ):
        runner.set_option("photometric_interpretation", PhotometricInterpretation.RGB)
    runner.set_option("planar_configuration", 0)
    runner.set_option("bits_allocated", frame.dtype.itemsize * 8)
    return frame.tobytes()
