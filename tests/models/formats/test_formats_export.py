"""``medvl export``: back to the source library's format, or the text tower as an AutoModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from medvl.cli import app
from medvl.models import create_aligner

runner = CliRunner()
TEXTS = ["Small left pleural effusion.", "Normal chest."]


def test_export_hf_from_a_saved_medvl_model(hf_clip_dir: Path, gray_images, tmp_path: Path) -> None:
    from transformers import AutoImageProcessor, CLIPModel

    create_aligner(str(hf_clip_dir)).save_pretrained(tmp_path / "medvl")
    result = runner.invoke(
        app, ["export", str(tmp_path / "medvl"), "--to", "hf", "--out", str(tmp_path / "hf")]
    )
    assert result.exit_code == 0, result.output
    source, exported = (
        CLIPModel.from_pretrained(str(hf_clip_dir)),
        CLIPModel.from_pretrained(str(tmp_path / "hf")),
    )
    processor = AutoImageProcessor.from_pretrained(str(tmp_path / "hf"))
    pixels = processor(
        images=[np.repeat(g[..., None], 3, -1) for g in gray_images], return_tensors="pt"
    )
    with torch.no_grad():
        a = source.get_image_features(**pixels).pooler_output
        b = exported.get_image_features(**pixels).pooler_output
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_export_text_encoder_opens_with_automodel(tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    aligner = create_aligner("tiny")
    aligner.save_pretrained(tmp_path / "medvl")
    out = tmp_path / "text"
    result = runner.invoke(
        app, ["export", str(tmp_path / "medvl"), "--to", "text-encoder", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    model, tokenizer = (
        AutoModel.from_pretrained(str(out)).eval(),
        AutoTokenizer.from_pretrained(str(out)),
    )
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        ours = aligner.eval().text_tower.encode(**aligner.tokenize(TEXTS))
    torch.testing.assert_close(pooled, ours, atol=1e-5, rtol=0)


def test_export_refuses_a_format_the_model_did_not_start_in(tmp_path: Path) -> None:
    create_aligner("tiny").save_pretrained(tmp_path / "medvl")
    result = runner.invoke(
        app, ["export", str(tmp_path / "medvl"), "--to", "hf", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 1
    assert "started as 'medvl-aligner', not a transformers CLIP/SigLIP model" in result.output
    bad = runner.invoke(
        app, ["export", str(tmp_path / "medvl"), "--to", "onnx", "--out", str(tmp_path / "x")]
    )
    assert (
        bad.exit_code == 2 and "expected one of ['hf', 'open_clip', 'text-encoder']" in bad.output
    )


def test_readme_clip_quickstart_runs_as_written(
    hf_clip_dir: Path, tmp_path: Path, monkeypatch, readme_code
) -> None:
    import shlex

    from medvl.cli.common import job_config
    from medvl.train.pretrain import PretrainConfig

    root = Path(__file__).resolve().parents[3]
    lines = readme_code("### Starting from CLIP, BiomedCLIP or MedSigLIP", "bash").splitlines()
    pretrains = [shlex.split(line)[1:] for line in lines if line.startswith("medvl pretrain")]
    models = [job_config(PretrainConfig, root / a[2], a[3:]).model for a in pretrains]
    assert models == ["/weights/clip-vit-base-patch16", "/weights/BiomedCLIP"]
    (export,) = [shlex.split(line)[1:] for line in lines if line.startswith("medvl export")]
    monkeypatch.chdir(tmp_path)  # the export reads what the pretraining wrote
    create_aligner(str(hf_clip_dir)).save_pretrained(tmp_path / "runs/dapt_from_clip/model")
    result = runner.invoke(app, export)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs/clip_adapted/model.safetensors").is_file()


def test_lora_adapter_applies_to_the_exported_text_encoder_with_plain_peft(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    from medvl.models.lora import LoraConfig, apply_lora, save_adapter

    torch.manual_seed(0)
    aligner = create_aligner("tiny")
    aligner.save_pretrained(tmp_path / "base")
    lora = apply_lora(aligner, LoraConfig(towers=("text",), r=2))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter (peft initialises B to zero)
    save_adapter(lora, tmp_path / "adapter")
    args = ["export", str(tmp_path / "base"), "--to", "text-encoder", "--out", str(tmp_path / "te")]
    result = runner.invoke(app, [*args, "--adapter", str(tmp_path / "adapter")])
    assert result.exit_code == 0, result.output
    plain = AutoModel.from_pretrained(str(tmp_path / "te")).eval()
    model = PeftModel.from_pretrained(plain, str(tmp_path / "te" / "adapter")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "te"))
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        ours = lora.eval().text_tower.encode(**aligner.tokenize(TEXTS))
        with model.disable_adapter():
            bare = model(**batch).last_hidden_state
    torch.testing.assert_close((hidden * mask).sum(1) / mask.sum(1), ours, atol=1e-5, rtol=0)
    assert (bare - hidden).abs().max() > 1e-3  # the adapter is what made them equal


def test_lora_adapter_on_a_clip_start_applies_to_the_exported_clip(
    hf_clip_dir: Path, gray_images, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoImageProcessor, CLIPModel

    from medvl.models.lora import LoraConfig, apply_lora, save_adapter

    aligner = create_aligner(str(hf_clip_dir))
    aligner.save_pretrained(tmp_path / "base")
    lora = apply_lora(aligner, LoraConfig(towers=("image", "text"), r=2, dropout=0.0))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    save_adapter(lora, tmp_path / "adapter")
    args = ["export", str(tmp_path / "base"), "--to", "hf", "--out", str(tmp_path / "hf")]
    result = runner.invoke(app, [*args, "--adapter", str(tmp_path / "adapter")])
    assert result.exit_code == 0, result.output
    clip = CLIPModel.from_pretrained(str(tmp_path / "hf"))
    model = PeftModel.from_pretrained(clip, str(tmp_path / "hf" / "adapter")).eval()
    processor = AutoImageProcessor.from_pretrained(str(tmp_path / "hf"))
    rgb = [np.repeat(g[..., None], 3, -1) for g in gray_images]
    with torch.no_grad():
        theirs = model.get_image_features(**processor(images=rgb, return_tensors="pt"))
        theirs = torch.nn.functional.normalize(theirs.pooler_output, dim=-1)
        ours = lora.eval().encode_image(torch.from_numpy(gray_images).float()[:, None] / 255)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
