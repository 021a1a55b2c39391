"""MedVLAligner: embeddings, gradients to both towers, temperature, save/load and checksums."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from medvl.config import ConfigError
from medvl.models import (
    AlignerConfig,
    ChecksumError,
    ContrastiveLoss,
    MedVLAligner,
    create_aligner,
)


def test_forward_returns_unit_norm_embeddings(tiny_aligner, pixels, reports) -> None:
    out = tiny_aligner(pixels, **tiny_aligner.tokenize(reports))
    assert out["image_embeds"].shape == (4, 64)
    assert out["text_embeds"].shape == (4, 64)
    torch.testing.assert_close(out["image_embeds"].norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(out["text_embeds"].norm(dim=-1), torch.ones(4))
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_gradients_reach_both_towers_projections_and_temperature(
    tiny_aligner, pixels, reports
) -> None:
    out = tiny_aligner(pixels, **tiny_aligner.tokenize(reports))
    ContrastiveLoss()(**out).backward()
    first_conv = tiny_aligner.image_tower.stages[0][0][0].weight
    word_embeddings = tiny_aligner.text_tower.model.embeddings.word_embeddings.weight
    first_layer = tiny_aligner.text_tower.model.encoder.layer[0].attention.self.query.weight
    for name, param in [
        ("image first conv", first_conv),
        ("text word embeddings", word_embeddings),
        ("text first layer", first_layer),
        ("image projection", tiny_aligner.image_projection.weight),
        ("text projection", tiny_aligner.text_projection.weight),
        ("logit scale", tiny_aligner.log_logit_scale),
    ]:
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name
    without_grad = [n for n, p in tiny_aligner.named_parameters() if p.grad is None]
    assert without_grad == []


def test_text_tower_exposes_transformers_model(tiny_aligner) -> None:
    from transformers import BertModel

    assert isinstance(tiny_aligner.text_tower.model, BertModel)
    assert tiny_aligner.text_tower.model.config._attn_implementation == "sdpa"


def test_logit_scale_is_clamped(tiny_aligner) -> None:
    with torch.no_grad():
        tiny_aligner.log_logit_scale.fill_(10.0)
    assert tiny_aligner.logit_scale.item() == pytest.approx(100.0)
    tiny_aligner.clamp_logit_scale_()
    assert tiny_aligner.log_logit_scale.item() == pytest.approx(math.log(100.0))


def test_image_tower_rejects_colour_input(tiny_aligner) -> None:
    with pytest.raises(ValueError, match=r"grayscale pixels of shape \(B, 1, H, W\)"):
        tiny_aligner.encode_image(torch.rand(2, 3, 64, 64))


def test_save_load_round_trip_is_bitwise_identical(tiny_aligner, pixels, reports, tmp_path) -> None:
    tiny_aligner.eval()
    tokens = tiny_aligner.tokenize(reports)
    with torch.no_grad():
        image_before = tiny_aligner.encode_image(pixels)
        text_before = tiny_aligner.encode_text(**tokens)
    tiny_aligner.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer",
    ]
    loaded = MedVLAligner.from_pretrained(tmp_path)
    reloaded_tokens = loaded.tokenize(reports)
    assert torch.equal(reloaded_tokens["input_ids"], tokens["input_ids"])
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(pixels), image_before)
        assert torch.equal(loaded.encode_text(**reloaded_tokens), text_before)
    assert loaded.config == tiny_aligner.config
    assert loaded.weights_sha256 == tiny_aligner.weights_sha256
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["weights_sha256"] == loaded.weights_sha256
    assert len(saved["weights_sha256"]) == 64


def test_saved_model_loads_without_pickle(tiny_aligner, tmp_path, monkeypatch) -> None:
    tiny_aligner.save_pretrained(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained must not call torch.load")

    monkeypatch.setattr(torch, "load", refuse)
    MedVLAligner.from_pretrained(tmp_path)


def test_tampered_weights_are_refused(tiny_aligner, tmp_path) -> None:
    tiny_aligner.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model.safetensors: SHA-256 is .* records"):
        MedVLAligner.from_pretrained(tmp_path)


def test_tampered_recorded_checksum_is_refused(tiny_aligner, tmp_path) -> None:
    tiny_aligner.save_pretrained(tmp_path)
    config = tmp_path / "config.json"
    payload = json.loads(config.read_text())
    payload["weights_sha256"] = "0" * 64
    config.write_text(json.dumps(payload))
    with pytest.raises(ChecksumError, match="changed or corrupted"):
        MedVLAligner.from_pretrained(tmp_path)


def test_loading_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        MedVLAligner.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format is 'something-else'"):
        MedVLAligner.from_pretrained(tmp_path)


def test_create_aligner_presets_overrides_and_directories(tiny_aligner, tmp_path) -> None:
    model = create_aligner("tiny", embed_dim=32, image__image_size=32)
    assert model.config.embed_dim == 32
    assert model.config.image.image_size == 32
    assert model.encode_image(torch.rand(1, 1, 32, 32)).shape == (1, 32)
    with pytest.raises(ConfigError, match="embed_dimension"):
        create_aligner("tiny", embed_dimension=32)
    with pytest.raises(ValueError, match="neither an aligner preset"):
        create_aligner("no-such-model")
    tiny_aligner.save_pretrained(tmp_path / "saved")
    again = create_aligner(tmp_path / "saved", text__gradient_checkpointing=True)
    assert again.text_tower.model.is_activation_checkpointing
    from_config = create_aligner(AlignerConfig(embed_dim=16, text=tiny_aligner.config.text))
    assert from_config.config.embed_dim == 16


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="above max_logit_scale"):
        AlignerConfig(init_temperature=0.001)
    with pytest.raises(ValueError, match="not one of"):
        create_aligner("tiny", image__arch="alexnet")


def test_provenance_records_pretrained_text_checksum() -> None:
    model = create_aligner("tiny-minilm")
    text = model.provenance["text"]
    assert text["name_or_path"] == "all-minilm-l6-v2"
    assert len(text["sha256"]) == 64
    assert Path(model.text_tower.tokenizer.name_or_path).name == "model"


def test_mlp_projection_option() -> None:
    model = create_aligner("tiny", projection="mlp")
    assert isinstance(model.image_projection, torch.nn.Sequential)
    assert model.encode_image(torch.rand(2, 1, 64, 64)).shape == (2, 64)
