"""Generic image/mask folders: DICOM/PNG/NIfTI images, PNG/NIfTI masks, volumes as slices."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medvl.data.sources import MaskFolderConfig, run_adapter
from medvl.data.sources.mask_folder import (
    case_name,
    load_mask_folder,
    read_mask,
    read_nifti,
    read_seg_image,
    scale_to_unit,
    structure_masks,
)


def _display_volume() -> np.ndarray:
    """(Z, H, W) with a distinct value at every voxel, so any flip or transpose shows."""
    return np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)


def test_nifti_is_laid_out_like_an_axial_dicom_series(tmp_path) -> None:
    disp = _display_volume()
    ras = np.ascontiguousarray(disp.transpose(2, 1, 0)[::-1, ::-1, :])  # x to the right, y anterior
    nib.save(nib.Nifti1Image(ras, np.diag([0.7, 0.8, 2.5, 1.0])), tmp_path / "ras.nii.gz")
    lps = np.ascontiguousarray(disp.transpose(2, 1, 0))  # stored as DICOM rows/columns
    nib.save(nib.Nifti1Image(lps, np.diag([-0.7, -0.8, 2.5, 1.0])), tmp_path / "lps.nii")
    for name in ("ras.nii.gz", "lps.nii"):
        data, spacing = read_nifti(tmp_path / name)
        np.testing.assert_array_equal(data, disp)
        assert spacing == pytest.approx((2.5, 0.8, 0.7))


def test_read_images_and_masks(tmp_path, make_dicom) -> None:
    dicom = make_dicom(tmp_path / "a.dcm", rows=16, columns=12, spacing=(0.3, 0.4))
    image = read_seg_image(dicom)
    assert image.pixels.shape == (16, 12) and image.spacing == pytest.approx((0.3, 0.4))
    assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    png = tmp_path / "m.png"
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).save(png)
    np.testing.assert_array_equal(read_mask(png), [[0, 1], [1, 0]])
    labels = tmp_path / "labels.png"
    Image.fromarray(np.array([[0, 1], [2, 2]], dtype=np.uint8)).save(labels)
    split = structure_masks(read_mask(labels), "organ", {2: "tumor"})
    assert sorted(split) == ["label_1", "tumor"] and split["tumor"].sum() == 2
    assert list(structure_masks(np.array([[0, 1]]), "organ", None)) == ["organ"]
    hu = np.array([-1000.0, 40.0, 2000.0])
    np.testing.assert_allclose(scale_to_unit(hu, "brain"), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="does not exist"):
        read_seg_image(tmp_path / "missing.dcm")
    assert case_name("x/case_0000.nii.gz") == "case" and case_name("y/img.dcm") == "img"


def test_load_2d_folder(tmp_path, make_dicom, make_raster) -> None:
    root, out = tmp_path / "data", tmp_path / "out"
    make_dicom(root / "images" / "p1.dcm", rows=16, columns=12)
    mask = np.zeros((16, 12), dtype=np.uint8)
    mask[3:9, 2:6], mask[10:14, 6:10] = 1, 2
    (root / "masks").mkdir(parents=True)
    Image.fromarray(mask).save(root / "masks" / "p1.png")
    make_raster(root / "images" / "p2.png", size=(20, 24))
    (root / "masks" / "p2").mkdir()
    Image.fromarray(np.full((24, 20), 255, dtype=np.uint8)).save(root / "masks" / "p2" / "lung.png")
    make_raster(root / "images" / "p3.png", size=(20, 24))
    Image.fromarray(np.ones((10, 10), dtype=np.uint8)).save(root / "masks" / "p3.png")
    make_raster(root / "images" / "p4.png")
    result = load_mask_folder(root, out, labels={1: "heart", 2: "nodule"})
    got = {(s.image_id, s.structure) for s in result.seg_samples}
    assert got == {("p1", "heart"), ("p1", "nodule"), ("p2", "lung")}
    heart = next(s for s in result.seg_samples if s.structure == "heart")
    assert heart.pixel_spacing == pytest.approx((0.2, 0.2)) and heart.split in (
        "train",
        "val",
        "test",
    )
    np.testing.assert_array_equal(read_mask(heart.mask_path), (mask == 1).astype(np.int32))
    reasons = {f.path.split("/")[-1]: f.reason for f in result.failures}
    assert "!= image shape" in reasons["p3.png"] and reasons["p4.png"] == "no mask for this image"


def test_volumes_become_slices(tmp_path) -> None:
    root, out = tmp_path / "nnunet", tmp_path / "out"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    hu = np.full((8, 6, 4), -1000.0, dtype=np.float32)  # (x, y, z) RAS
    labels = np.zeros((8, 6, 4), dtype=np.uint8)
    hu[2:6, 1:5, 1:3], labels[2:6, 1:5, 1:3] = 60.0, 1
    labels[3, 2, 2] = 2
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    nib.save(nib.Nifti1Image(hu, affine), root / "imagesTr" / "ct1_0000.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / "ct1.nii.gz")
    result = load_mask_folder(root, out, labels={1: "liver", 2: "tumor"}, window=(40, 400))
    assert not result.failures
    got = sorted((s.structure, s.image_id) for s in result.seg_samples)
    assert got == [("liver", "ct1:z0001"), ("liver", "ct1:z0002"), ("tumor", "ct1:z0002")]
    sample = result.seg_samples[0]
    assert sample.pixel_spacing == pytest.approx((0.9, 0.9)) and sample.image_path.endswith(".npy")
    pixels = read_seg_image(sample.image_path).pixels
    assert pixels.shape == (6, 8) and pixels.max() == pytest.approx(0.55) and pixels.min() == 0.0
    assert read_mask(sample.mask_path).sum() == 16
    everything = load_mask_folder(root, tmp_path / "all", labels={1: "liver"}, include_empty=True)
    assert len(everything.seg_samples) == 2 * 4  # two structures on each of four slices
    via_registry = run_adapter(
        "mask_folder", root, tmp_path / "reg", MaskFolderConfig(window="brain")
    )
    assert {s.structure for s in via_registry.seg_samples} == {"label_1", "label_2"}
