"""nvImageCodec GPU decoding: tried first only on CUDA with the package and a GPU; otherwise the
measured CPU order decodes exactly as before."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from pydicom import uid
from pydicom.pixels import get_decoder
from test_decode_plugins import encoded, pixels

from medvl.io.codecs import gpu
from medvl.io.codecs.gpu import GPU_FIRST, PLUGIN_MODULE, disable_gpu_decoding, enable_gpu_decoding
from medvl.io.codecs.plugins import PLUGIN_ORDER, plugin_order
from medvl.io.dicom import read_dicom

LABEL = "0.0+fake-nvimgcodec"
FAKE_MODULE = "fake_nvimgcodec_pydicom_plugin"
SUPPORTED = (uid.JPEG2000Lossless, uid.HTJ2KLossless)


def fake_plugin(can_decode: bool = True, fail: bool = False) -> types.ModuleType:
    """Stands in for nvImageCodec's plugin module; ``register`` adds it to pydicom for real,
    decoding through pydicom's own CPU plugin (or raising, with ``fail``)."""
    module = types.ModuleType(FAKE_MODULE)
    module.NVIMGCODEC_PLUGIN_LABEL = LABEL
    module.SUPPORTED_TRANSFER_SYNTAXES = list(SUPPORTED)
    module.DECODER_DEPENDENCIES = {s: ("numpy",) for s in SUPPORTED}
    module.registered = 0

    def is_available(syntax) -> bool:
        return can_decode and syntax in SUPPORTED

    def _decode_frame(src, runner):
        if fail:
            raise RuntimeError("nvjpeg2k refused the stream")
        if runner.transfer_syntax == uid.HTJ2KLossless:
            from medvl.io.codecs.htj2k_plugin import decode_frame
        else:
            from pydicom.pixels.decoders.pillow import _decode_frame as decode_frame
        return decode_frame(src, runner)

    def register() -> bool:
        module.registered += 1
        for syntax in SUPPORTED:
            if LABEL not in get_decoder(syntax).available_plugins:
                get_decoder(syntax).add_plugin(LABEL, (FAKE_MODULE, "_decode_frame"))
        return True

    module.is_available, module._decode_frame, module.register = (
        is_available,
        _decode_frame,
        register,
    )
    return module


@pytest.fixture
def install(monkeypatch):
    """Put a fake plugin module where ``gpu`` imports it; undo every registration after."""

    def put(module: types.ModuleType) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
        monkeypatch.setattr(gpu, "PLUGIN_MODULE", FAKE_MODULE)
        return module

    yield put
    disable_gpu_decoding()
    for syntax in SUPPORTED:
        if LABEL in get_decoder(syntax).available_plugins:
            get_decoder(syntax).remove_plugin(LABEL)


def j2k_file(build_dataset, tmp_path, syntax=uid.JPEG2000Lossless):
    ds = encoded(build_dataset, syntax, pixels("uint16"), WindowCenter=2048, WindowWidth=4096)
    ds.save_as(tmp_path / "image.dcm")
    return tmp_path / "image.dcm"


def test_nothing_changes_without_the_package():
    assert PLUGIN_MODULE == "nvidia.nvimgcodec.tools.dicom.pydicom_plugin"
    if gpu._plugin() is not None:
        pytest.skip("nvImageCodec is installed here")
    assert enable_gpu_decoding("cuda", gpu_present=True) is None and GPU_FIRST == {}


@pytest.mark.parametrize(
    ("device", "gpu_present", "can_decode"),
    [("cpu", True, True), ("cuda", False, True), ("mps", True, True), ("cuda", True, False)],
)
def test_not_chosen_off_cuda_or_without_a_gpu(
    install, build_dataset, tmp_path, device, gpu_present, can_decode
):
    module = install(fake_plugin(can_decode))
    before = read_dicom(j2k_file(build_dataset, tmp_path))
    assert enable_gpu_decoding(device, gpu_present) is None
    assert module.registered == 0 and GPU_FIRST == {}
    after = read_dicom(j2k_file(build_dataset, tmp_path))
    assert after.decoder == before.decoder == PLUGIN_ORDER[uid.JPEG2000Lossless][0]
    np.testing.assert_array_equal(after.pixels, before.pixels)


@pytest.mark.parametrize("syntax", SUPPORTED, ids=lambda s: s.name)
def test_chosen_first_on_cuda_with_a_gpu(install, build_dataset, tmp_path, syntax):
    cpu = read_dicom(j2k_file(build_dataset, tmp_path, syntax))
    install(fake_plugin())
    assert enable_gpu_decoding("cuda:1", gpu_present=True) == LABEL
    available = get_decoder(syntax).available_plugins
    assert plugin_order(syntax, available) == [
        LABEL,
        *plugin_order(syntax, set(available) - {LABEL}),
    ]
    rle = plugin_order(uid.RLELossless, ["pydicom", "pylibjpeg", LABEL])
    assert rle == ["pylibjpeg", "pydicom", LABEL]  # syntaxes it does not support: CPU order
    image = read_dicom(j2k_file(build_dataset, tmp_path, syntax))
    assert image.decoder == LABEL
    np.testing.assert_array_equal(image.pixels, cpu.pixels)
    disable_gpu_decoding()
    assert read_dicom(j2k_file(build_dataset, tmp_path, syntax)).decoder == cpu.decoder


def test_a_refused_stream_falls_back_to_the_cpu_order(install, build_dataset, tmp_path):
    install(fake_plugin(fail=True))
    assert enable_gpu_decoding("cuda", gpu_present=True) == LABEL
    image = read_dicom(j2k_file(build_dataset, tmp_path))
    assert image.decoder == PLUGIN_ORDER[uid.JPEG2000Lossless][0]
