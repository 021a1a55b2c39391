"""Optional GPU decoding: NVIDIA nvImageCodec's own pydicom plugin, tried first when enabled.

nvImageCodec (``pip install nvidia-nvimgcodec-cu12`` or ``-cu13``, with CuPy) ships a pydicom
decoding plugin, :data:`PLUGIN_MODULE`, for JPEG baseline/extended/lossless, JPEG 2000 and HTJ2K;
MONAI's ``NvImgCodecPydicomReader`` registers the same module. medvl does not decode anything
itself here: :func:`enable_gpu_decoding` registers that plugin with pydicom and puts it first in
:func:`medvl.io.codecs.plugins.plugin_order` for the syntaxes it supports, but only when the
device is CUDA, a GPU is present (the caller says so: nvImageCodec 0.9's ``is_available``
checks the transfer syntax only) and the package imports. Everywhere else (no package, no GPU,
a CPU device) nothing changes: the measured CPU order decodes as before. The CPU plugins
stay behind it, so a file nvImageCodec refuses still decodes, and ``DicomImage.decoder``
records which plugin did.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from pydicom import uid

logger = logging.getLogger(__name__)

PLUGIN_MODULE = "nvidia.nvimgcodec.tools.dicom.pydicom_plugin"
"""Where nvImageCodec keeps its pydicom plugin (``is_available``, ``register``, its label)."""

GPU_FIRST: dict[str, str] = {}
"""Transfer syntax UID -> label of the GPU plugin to try before the CPU order (when enabled)."""


def _plugin() -> ModuleType | None:
    try:
        return importlib.import_module(PLUGIN_MODULE)
    except ImportError:
        return None


def enable_gpu_decoding(device: str, gpu_present: bool) -> str | None:
    """Decode with nvImageCodec first when ``device`` is CUDA and it can; return its label.

    Parameters
    ----------
    device
        The device the caller runs its model on (``cuda``, ``cuda:1``, ``cpu``, ...).
    gpu_present
        Whether this process sees a CUDA GPU (``torch.cuda.is_available()``; this layer does
        not import torch).

    Returns
    -------
    str or None
        The plugin's label once registered; ``None`` (and nothing changed) for a non-CUDA
        device, without a GPU, when the package is not installed, or when its plugin says it
        cannot decode (older releases check CuPy and CUDA there).
    """
    if not (device.startswith("cuda") and gpu_present):
        return None
    plugin = _plugin()
    if plugin is None or not plugin.is_available(uid.JPEG2000Lossless):
        logger.debug("nvImageCodec GPU decoding not available; CPU plugins decode")
        return None
    if not plugin.register():
        return None
    label = str(plugin.NVIMGCODEC_PLUGIN_LABEL)
    for syntax in plugin.SUPPORTED_TRANSFER_SYNTAXES:
        GPU_FIRST[str(syntax)] = label
    logger.info("nvImageCodec decodes JPEG, JPEG 2000 and HTJ2K pixel data on the GPU")
    return label


def disable_gpu_decoding() -> None:
    """Back to the CPU order (the registration with pydicom stays; it is no longer tried first)."""
    GPU_FIRST.clear()
