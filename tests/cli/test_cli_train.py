"""``medvl pretrain`` takes its starting weights from the command line (README overrides)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from medvl.cli import app
from medvl.models import MedVLAligner

runner = CliRunner()


def _tiny_vit_dir(out: Path) -> torch.nn.Module:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    model = ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=16,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
        ),
        add_pooling_layer=False,
    )
    model.save_pretrained(str(out))
    processor = {"image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28]}
    (out / "preprocessor_config.json").write_text(json.dumps(processor))
    return model


def _tiny_bert_dir(out: Path) -> torch.nn.Module:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from medvl.models.towers import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(1)
    model = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
        )
    )
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return model


def test_pretrain_starts_from_image_and_text_weights_given_as_overrides(tmp_path: Path) -> None:
    vit, bert = _tiny_vit_dir(tmp_path / "vit"), _tiny_bert_dir(tmp_path / "bert")
    corpus = tmp_path / "reports"
    corpus.mkdir()
    for i in range(8):
        (corpus / f"r{i}.txt").write_text(f"Report {i}: small left pleural effusion.")
    run = tmp_path / "run"
    args = [
        "pretrain",
        "model=tiny",
        "image.arch=hf",
        f"image.pretrained={tmp_path / 'vit'}",
        "image.image_size=32",
        f"text.name_or_path={tmp_path / 'bert'}",
        f"output_dir={run}",
        f"stages.0.corpus={corpus}",
        "stages.0.val_fraction=0.25",
        "train.max_steps=1",
        "train.batch_size=2",
        "train.lr=1e-12",
        "train.weight_decay=0.0",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = MedVLAligner.from_pretrained(run / "model")
    assert model.provenance["image"]["pretrained"] == str(tmp_path / "vit")
    assert model.provenance["text"]["name_or_path"] == str(tmp_path / "bert")
    assert model.config.image.channel_mean == (0.48, 0.46, 0.41)
    # lr 1e-12: the saved towers are the given weights
    torch.testing.assert_close(
        model.text_tower.model.embeddings.word_embeddings.weight,
        bert.embeddings.word_embeddings.weight,
    )
    torch.testing.assert_close(
        model.image_tower.model.embeddings.patch_embeddings.projection.weight,
        vit.embeddings.patch_embeddings.projection.weight,
    )


def test_pretrain_rejects_an_unknown_tower_key_and_a_foreign_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pretrain", "image.archh=resnet50"])
    assert result.exit_code == 2
    assert "unknown config key image.archh" in result.output
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    result = runner.invoke(app, ["pretrain", f"model={tmp_path}", f"output_dir={tmp_path}/run"])
    assert result.exit_code == 1
    assert "config.json: holds 'bert'; expected a medvl aligner" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_readme_tower_override_example_resolves() -> None:
    import re
    import shlex

    from medvl.cli.common import job_config
    from medvl.train.pretrain import PretrainConfig
    from medvl.train.pretrain.job import starting_overrides

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    (command,) = re.findall(r"`(medvl pretrain [^`]*image\.arch=[^`]*)`", readme)
    argv = shlex.split(command)[2:]
    config = job_config(PretrainConfig, root / argv[1], argv[2:])
    assert starting_overrides(config) == {
        "image.arch": "densenet121",
        "image.pretrained": "/weights/densenet121.pth",
        "text.name_or_path": "/weights/CXR-BERT",
    }
