"""The target size reaches the decoder: a JPEG 2000 radiograph bound for a small tower decodes at
a reduced level inside the eval chain, with the spacing of the pixels it actually holds."""

from __future__ import annotations

import torch
from pydicom.uid import JPEG2000Lossless

from medvl.data.loading import LoadDicom
from medvl.data.transforms import PipelineConfig, eval_transforms
from medvl.io.codecs.encode import compress

WINDOW = {"WindowCenter": 2048, "WindowWidth": 4096}


def radiograph_pair(xray_tools, tmp_path):
    """The same 300 x 240 radiograph uncompressed and as JPEG 2000 lossless (0.2 mm pixels)."""
    pixels = xray_tools.pixels(5, (300, 240))
    datasets = [xray_tools.dataset(pixels), xray_tools.dataset(pixels)]
    for ds in datasets:
        ds.WindowCenter, ds.WindowWidth = WINDOW["WindowCenter"], WINDOW["WindowWidth"]
    plain = xray_tools.save(datasets[0], tmp_path / "plain.dcm")
    j2k = xray_tools.save(compress(datasets[1], JPEG2000Lossless), tmp_path / "j2k.dcm")
    return plain, j2k


def test_load_dicom_passes_the_target_and_scales_the_spacing(xray_tools, tmp_path):
    _, j2k = radiograph_pair(xray_tools, tmp_path)
    reduced = LoadDicom(target_size=64)(j2k)
    full = LoadDicom()(j2k)
    assert reduced.meta["reduction"] == 2 and tuple(reduced.shape) == (1, 75, 60)
    assert full.meta["reduction"] == 0 and tuple(full.shape) == (1, 300, 240)
    assert torch.allclose(
        torch.diagonal(reduced.affine)[:2].double(), torch.tensor([0.8, 0.8]).double()
    )
    assert torch.allclose(
        torch.diagonal(full.affine)[:2].double(), torch.tensor([0.2, 0.2]).double()
    )


def test_eval_chain_on_jpeg2000_matches_the_uncompressed_file(xray_tools, tmp_path):
    plain, j2k = radiograph_pair(xray_tools, tmp_path)
    for resize in ("pad", "stretch"):
        chain = eval_transforms(PipelineConfig(size=64, resize=resize))
        a, b = chain({"image": str(plain)})["image"], chain({"image": str(j2k)})["image"]
        assert tuple(a.shape) == tuple(b.shape) == (1, 64, 64)
        assert float((a - b).abs().mean()) < 0.01
    levels = {}
    for resize in ("pad", "stretch"):  # pad needs the longest side, stretch both sides >= 64
        chain = eval_transforms(PipelineConfig(size=64, resize=resize), keep_meta=True)
        levels[resize] = chain({"image": str(j2k)})["image"].meta["reduction"]
    assert levels == {"pad": 2, "stretch": 1}
