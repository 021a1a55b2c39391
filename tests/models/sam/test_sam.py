"""SamModel: tiny SAM forward/backward on CPU, freezing modes, checkpoints, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from medvl.models.hub import ChecksumError, sha256_file
from medvl.models.sam import SamConfig, SamModel, build_sam, create_sam


def _tiny(**kw) -> SamModel:
    return build_sam(SamConfig(variant="tiny", img_size=64, **kw))


def _gray(b: int = 2, side: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gray = torch.rand(b, 1, side, side, generator=torch.Generator().manual_seed(0))
    return gray, torch.tensor([[side, side]] * b)


class PicklePayload:
    """An arbitrary object: a weights-only load must refuse to unpickle it."""


BOXES = torch.tensor([[4.0, 6.0, 40.0, 50.0], [10.0, 2.0, 60.0, 30.0]])


def test_tiny_forward_backward_trains_only_the_decoder() -> None:
    model = _tiny()
    gray, sizes = _gray()
    out = model(gray=gray, input_sizes=sizes, boxes=BOXES)
    assert out.low_res_logits.shape == (2, 1, 16, 16)
    assert out.iou_pred.shape == (2, 1)
    (out.low_res_logits.mean() + out.iou_pred.mean()).backward()
    for name, p in model.named_parameters():
        if name.startswith(("image_encoder.", "prompt_encoder.")):
            assert p.grad is None, name
    used = model.mask_decoder.output_hypernetworks_mlps[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in used.parameters())
    for index in (1, 2, 3):
        mlp = model.mask_decoder.output_hypernetworks_mlps[index]
        assert all(not p.requires_grad and p.grad is None for p in mlp.parameters())
    assert model.mask_decoder.transformer.layers[0].mlp.lin1.weight.grad.abs().sum() > 0


def test_multimask_output_and_unused_token_frozen() -> None:
    model = _tiny(mask_outputs="multi")
    emb = model.encode(model.normalize(*_gray()))
    out = model(image_embeddings=emb, boxes=BOXES)
    assert out.low_res_logits.shape == (2, 3, 16, 16) and out.iou_pred.shape == (2, 3)
    assert model.unused_mask_outputs() == (0,)
    assert not any(
        p.requires_grad for p in model.mask_decoder.output_hypernetworks_mlps[0].parameters()
    )


def test_train_modes_set_requires_grad() -> None:
    full = _tiny(train_mode="full")
    assert full.encoder_trainable
    assert all(p.requires_grad for p in full.prompt_encoder.parameters())
    lora = _tiny(train_mode="decoder+lora", lora_r=2)
    names = [n for n, p in lora.image_encoder.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert sum("qkv" in n for n in names) == 2 * len(lora.image_encoder.blocks)  # A and B
    assert not any(p.requires_grad for p in lora.prompt_encoder.parameters())
    assert not _tiny().encoder_trainable


def test_lora_encoder_gets_gradients_through_forward() -> None:
    model = _tiny(train_mode="decoder+lora", lora_r=2)
    torch.nn.init.normal_(model.image_encoder.blocks[0].attn.qkv.lora_B["default"].weight)
    gray, sizes = _gray()
    model(gray=gray, input_sizes=sizes, boxes=BOXES).low_res_logits.sum().backward()
    lora_a = model.image_encoder.blocks[0].attn.qkv.lora_A["default"].weight
    assert lora_a.grad is not None and lora_a.grad.abs().sum() > 0
    assert model.image_encoder.blocks[0].attn.qkv.base_layer.weight.grad is None


def test_normalize_matches_upstream_preprocess() -> None:
    model = _tiny()
    gray = torch.zeros(1, 1, 64, 64)
    gray[0, 0, :40, :50] = torch.rand(40, 50)
    ours = model.normalize(gray, torch.tensor([[40, 50]]))
    rgb = (gray[0, :, :40, :50] * 255).expand(3, -1, -1)
    upstream = model.preprocess(rgb)  # segment-anything: normalise, then zero-pad
    assert torch.allclose(ours[0], upstream, atol=1e-5)


def test_encoder_identity_tracks_weights() -> None:
    model = _tiny()
    first = model.encoder_identity()
    assert model.encoder_identity() == first
    assert _tiny().encoder_identity() == first  # same seed, same weights
    with torch.no_grad():
        model.image_encoder.patch_embed.proj.weight[0, 0, 0, 0] += 1e-3
    assert model.encoder_identity() != first
    with torch.no_grad():
        model.mask_decoder.iou_token.weight += 1.0
    second = model.encoder_identity()
    assert second == model.encoder_identity(refresh=True)


def test_local_checkpoint_loads_weights_only_and_records_sha(tmp_path) -> None:
    source = build_sam(SamConfig(variant="tiny", img_size=64, seed=7))
    path = tmp_path / "sam_tiny.pth"
    torch.save(source.state_dict(), path)
    model = build_sam(SamConfig(variant="tiny", img_size=64, checkpoint=str(path)))
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert model.provenance.checkpoint_sha256 == sha256_file(path)

    bad = tmp_path / "pickle.pth"
    torch.save({"model": PicklePayload()}, bad)
    with pytest.raises(ValueError, match="weights-only"):
        build_sam(SamConfig(variant="tiny", img_size=64, checkpoint=str(bad)))
    wrong = tmp_path / "wrong.pth"
    torch.save({"image_encoder.nope": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="not a SAM checkpoint"):
        build_sam(SamConfig(variant="tiny", img_size=64, checkpoint=str(wrong)))


def test_save_and_load_roundtrip(tmp_path) -> None:
    model = _tiny(train_mode="decoder+lora", lora_r=2)
    with torch.no_grad():
        model.mask_decoder.iou_token.weight += 0.5
    model.save_pretrained(tmp_path / "m")
    loaded = create_sam(tmp_path / "m")
    assert loaded.lora_applied and loaded.weights_sha256 == model.weights_sha256
    assert not any(p.requires_grad for p in loaded.parameters())
    emb = model.encode(model.normalize(*_gray()))
    with torch.no_grad():
        a = model(image_embeddings=emb, boxes=BOXES).low_res_logits
        b = loaded(image_embeddings=emb, boxes=BOXES).low_res_logits
    assert torch.equal(a, b)
    payload = json.loads((tmp_path / "m" / "config.json").read_text())
    assert payload["sam"]["variant"] == "tiny"
    assert payload["encoder_identity"] == loaded.encoder_identity()
    again = build_sam(
        SamConfig(variant="tiny", img_size=64, train_mode="decoder+lora", lora_r=2,
                  checkpoint=str(tmp_path / "m"))
    )  # fmt: skip
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True)
    )
    assert again.provenance.checkpoint_sha256 == model.weights_sha256
    assert any(p.requires_grad for p in again.mask_decoder.parameters())  # training continues
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ChecksumError):
        SamModel.from_pretrained(tmp_path / "m")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="1024"):
        SamConfig(variant="vit_b", img_size=512)
    with pytest.raises(ValueError, match="multiple of 16"):
        SamConfig(variant="tiny", img_size=72)
    with pytest.raises(FileNotFoundError):
        create_sam("/nonexistent/sam")
