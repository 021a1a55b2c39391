"""Raw SAM/MedSAM checkpoints in every common shape load wherever a SAM is accepted, and
``preprocessing: medsam`` reproduces MedSAM's own inference (MedSAM_Inference.py) exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medvl.models.hub import sha256_file
from medvl.models.sam import SamConfig, create_sam
from medvl.models.sam.checkpoints import checkpoint_architecture
from medvl.models.sam.model import SamModel
from medvl.models.sam.predict import SamSegmenter

SIDE = 64


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    model = SamModel(SamConfig(variant="tiny", img_size=SIDE, seed=3))
    return {k: v.clone() for k, v in model.state_dict().items()}


SHAPES = {
    "plain": lambda s: s,
    "model": lambda s: {"model": s, "optimizer": {}, "epoch": 3},  # MedSAM's trainer
    "ddp": lambda s: {f"module.{k}": v for k, v in s.items()},
    "model+ddp": lambda s: {"model": {f"module.{k}": v for k, v in s.items()}},
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_checkpoint_shape_loads_strictly(tiny_state, shape: str, tmp_path: Path) -> None:
    path = tmp_path / "sam_tiny.pth"
    torch.save(SHAPES[shape](tiny_state), path)
    model = create_sam(path)
    assert (model.config.variant, model.config.img_size) == ("tiny", SIDE)
    for key, value in tiny_state.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.provenance.checkpoint == str(path)
    assert model.weights_sha256 == model.provenance.checkpoint_sha256 == sha256_file(path)


def test_variant_is_told_from_the_encoder_width() -> None:
    state = {
        "image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16),
        "image_encoder.pos_embed": torch.zeros(1, 64, 64, 1),
    }
    assert checkpoint_architecture(state, "x.pth") == ("vit_b", 1024)
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(1280, 3, 16, 16)
    assert checkpoint_architecture(state, "x.pth") == ("vit_h", 1024)


def test_a_checkpoint_that_does_not_fit_is_one_clear_error(tiny_state, tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match=r"other.pth: not a SAM checkpoint \(no image_encoder"):
        create_sam(path)
    broken = dict(tiny_state)
    broken.pop("mask_decoder.iou_token.weight")
    torch.save(broken, path)
    with pytest.raises(ValueError, match="other.pth: does not fit the SAM architecture"):
        create_sam(path)
    torch.save(tiny_state, path)
    with pytest.raises(ValueError, match="holds a SAM tiny for 64 px inputs; the config asks"):
        create_sam(SamConfig(variant="tiny", img_size=128, checkpoint=str(path)))


def medsam_reference(model: SamModel, img_np: np.ndarray, box_np: np.ndarray) -> np.ndarray:
    """MedSAM_Inference.py's pipeline, line for line, on segment-anything's own modules."""
    from skimage import transform

    img_3c = np.repeat(img_np[:, :, None], 3, axis=-1)
    H, W, _ = img_3c.shape  # noqa: N806 (MedSAM's names)
    img_1024 = transform.resize(
        img_3c, (SIDE, SIDE), order=3, preserve_range=True, anti_aliasing=True
    ).astype(np.uint8)
    img_1024 = (img_1024 - img_1024.min()) / np.clip(
        img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None
    )
    img_1024_tensor = torch.tensor(img_1024).float().permute(2, 0, 1).unsqueeze(0)
    box_1024 = box_np / np.array([W, H, W, H]) * SIDE
    with torch.no_grad():
        image_embedding = model.image_encoder(img_1024_tensor)
        box_torch = torch.as_tensor(box_1024, dtype=torch.float)[:, None, :]
        sparse, dense = model.prompt_encoder(points=None, boxes=box_torch, masks=None)
        low_res_logits, _ = model.mask_decoder(
            image_embeddings=image_embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        low_res_pred = torch.sigmoid(low_res_logits)
        low_res_pred = F.interpolate(
            low_res_pred, size=(H, W), mode="bilinear", align_corners=False
        )
    return (low_res_pred.squeeze().numpy() > 0.5).astype(np.uint8)


def test_medsam_preprocessing_reproduces_medsam_inference(tiny_state, tmp_path: Path) -> None:
    path = tmp_path / "medsam_tiny.pth"
    torch.save({"model": tiny_state}, path)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:90, :130]
    blob = ((yy - 45) ** 2 / 900 + (xx - 60) ** 2 / 1600 < 1) * 120
    image = np.clip(blob + rng.normal(60, 25, blob.shape), 0, 255).astype(np.uint8)
    box = np.array([[20.0, 15.0, 100.0, 75.0]])
    medsam = create_sam(path, preprocessing="medsam")
    ours = SamSegmenter(medsam, device="cpu").predict(image / 255.0, boxes=box).masks[0]
    expected = medsam_reference(medsam, image, box)
    assert 0 < expected.sum() < expected.size  # a mask that can disagree
    assert int((ours != expected.astype(bool)).sum()) == 0
    sam_style = SamSegmenter(create_sam(path), device="cpu").predict(image / 255.0, boxes=box)
    assert (sam_style.masks[0] != expected.astype(bool)).sum() > 0  # SAM's pipeline differs
