"""Transform chains: shapes, ranges, determinism, geometry and the loader's safe meta."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from medvl.data.transforms import (
    LoadDicom,
    LoadDicomd,
    LoadMask,
    PipelineConfig,
    augment_transforms,
    eval_transforms,
    seg_transforms,
    train_transforms,
)
from medvl.io.dicom import DicomReadError, read_dicom


def test_load_dicom_adds_channel_and_keeps_only_safe_meta(write_xray):
    path = write_xray("a.dcm", shape=(30, 20), spacing=(0.5, 0.25))
    image = LoadDicom()(path)
    assert isinstance(image, MetaTensor)
    assert image.shape == (1, 30, 20) and image.dtype == torch.float32
    np.testing.assert_array_equal(image[0].numpy(), read_dicom(path).pixels)
    assert image.meta["modality"] == "DX" and image.meta["view_position"] == "PA"
    assert image.meta["pixel_spacing"] == (0.5, 0.25)
    assert torch.allclose(torch.diagonal(image.affine)[:2], torch.tensor([0.5, 0.25]).double())
    flat = repr(image.meta)
    assert "MRN-SECRET" not in flat and "Planted" not in flat


def test_load_dicomd_passes_window_through(write_xray):
    path = write_xray("a.dcm")
    out = LoadDicomd("image", window=(1000.0, 200.0))({"image": path, "text": "kept"})
    assert out["text"] == "kept"
    expected = read_dicom(path, window=(1000.0, 200.0)).pixels
    np.testing.assert_array_equal(out["image"][0].numpy(), expected)


def test_png_radiographs_load_through_the_same_transform(tmp_path):
    pixels = (np.arange(12 * 10).reshape(12, 10) % 256).astype(np.uint8)
    path = tmp_path / "view1.png"
    Image.fromarray(pixels).save(path)
    image = LoadDicom()(path)
    assert image.shape == (1, 12, 10)
    np.testing.assert_allclose(image[0].numpy(), pixels / 255.0, atol=1e-7)


def test_missing_and_non_image_files_raise_dicom_read_error(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 300)
    for path in (tmp_path / "missing.dcm", junk):
        with pytest.raises(DicomReadError, match=str(path.name)):
            LoadDicom()(path)


@pytest.mark.parametrize("resize", ["pad", "stretch"])
def test_eval_chain_shape_range_and_determinism(write_xray, resize):
    path = write_xray("wide.dcm", shape=(40, 80))
    chain = eval_transforms(32, resize=resize)
    first = chain({"image": path})["image"]
    second = eval_transforms(32, resize=resize)({"image": path})["image"]
    assert type(first) is torch.Tensor and first.shape == (1, 32, 32)
    assert first.dtype == torch.float32 and first.min() >= 0.0 and first.max() <= 1.0
    assert torch.equal(first, second)
    if resize == "pad":  # 40x80 -> 16x32, padded by 8 rows of zeros top and bottom
        assert torch.all(first[:, :8] == 0) and torch.all(first[:, -8:] == 0)
        assert first[:, 8:24].min() > 0
    else:
        assert first.min() > 0


def test_train_chain_is_random_but_seedable_and_stays_in_range(write_xray):
    path = write_xray("a.dcm", shape=(64, 64))
    strong = {"prob": 1.0, "rotate_deg": 10.0, "scale": 0.1, "brightness": 0.3}

    def run(seed: int) -> torch.Tensor:
        chain = train_transforms(32, augment=strong)
        chain.set_random_state(seed)
        return chain({"image": path})["image"]

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (1, 32, 32) and a.min() >= 0.0 and a.max() <= 1.0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, eval_transforms(32)({"image": path})["image"])


def test_no_horizontal_flip_unless_configured():
    chain = augment_transforms(size=16)
    assert "RandFlipd" not in [type(t).__name__ for t in chain.transforms]
    flips = augment_transforms(size=16, flip_prob=1.0, prob=0.0)
    ramp = torch.linspace(0, 1, 16).repeat(16, 1)[None]
    out = flips({"image": ramp.clone()})["image"]
    assert torch.allclose(out, torch.flip(ramp, dims=[2]))


def test_pipeline_key_changes_with_every_pixel_setting():
    base = PipelineConfig(size=224)
    assert base.key() == PipelineConfig(size=224).key()
    variants = [
        PipelineConfig(size=256),
        PipelineConfig(size=224, window=(40.0, 400.0)),
        PipelineConfig(size=224, window="lung"),
        PipelineConfig(size=224, resize="stretch"),
        PipelineConfig(size=224, frame=1),
        PipelineConfig(size=224, interpolation="bilinear"),
    ]
    assert len({base.key(), *(v.key() for v in variants)}) == len(variants) + 1
    with pytest.raises(ValueError, match="resize"):
        PipelineConfig(resize="crop")


def test_seg_chain_keeps_mask_binary_and_aligned(write_xray, tmp_path):
    path = write_xray("img.dcm", shape=(40, 80))
    mask = np.zeros((40, 80), dtype=np.uint8)
    mask[10:30, 0:40] = 255  # left half of the image, middle rows
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    out = seg_transforms(32)({"image": path, "mask": mask_path})
    assert out["image"].shape == out["mask"].shape == (1, 32, 32)
    assert set(out["mask"].unique().tolist()) == {0.0, 1.0}
    rows, cols = torch.nonzero(out["mask"][0], as_tuple=True)
    # rows 10-29 of 40 -> 4-11 of 16, plus 8 rows of padding; columns 0-39 of 80 -> 0-15
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (12, 19, 0, 15)


def test_mask_loader_reads_npy_and_refuses_other_formats(tmp_path):
    arr = np.zeros((5, 6), dtype=np.int64)
    arr[1, 2] = 3
    np.save(tmp_path / "m.npy", arr)
    loaded = LoadMask()(tmp_path / "m.npy")
    assert loaded.shape == (1, 5, 6) and loaded.sum() == 1 and loaded[0, 1, 2] == 1
    (tmp_path / "m.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(ValueError, match="not PNG or .npy"):
        LoadMask()(tmp_path / "m.jpg")


def test_seg_chain_rejects_a_mask_of_another_shape(write_xray, tmp_path):
    path = write_xray("img.dcm", shape=(40, 80))
    np.save(tmp_path / "m.npy", np.ones((40, 40), dtype=np.uint8))
    with pytest.raises(ValueError, match="does not belong"):
        seg_transforms(32)({"image": path, "mask": tmp_path / "m.npy"})
