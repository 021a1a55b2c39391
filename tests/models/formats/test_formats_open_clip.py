"""open_clip models (hub directories, model name + checkpoint) load equal to open_clip itself.

Two tiny architectures built by open_clip from its own configs: a CLIP ViT with the OpenAI BPE
tokenizer, and a BiomedCLIP-style model (timm ViT tower with its head, an HF BERT text tower
with a bias-free MLP projection whose hidden width differs from its input).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medvl.models import create_aligner
from medvl.models.formats import detect_format
from medvl.models.formats.open_clip import export_open_clip

TEXTS = ["Large right pleural effusion.", "No acute cardiopulmonary abnormality."]
TOL = 1e-5
SIDE = 32
MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
TINY_VIT = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": SIDE, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def _bert_dir(out: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig

    from medvl.models.towers import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    tokenizer.save_pretrained(str(out))
    BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
    ).save_pretrained(str(out))
    return out


def biomedclip_style(bert: Path) -> dict:
    return {
        "embed_dim": 16,
        "custom_text": True,
        "vision_cfg": {
            "timm_model_name": "vit_tiny_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,  # open_clip builds timm towers at their default size
        },
        "text_cfg": {
            "hf_model_name": str(bert),
            "hf_tokenizer_name": str(bert),
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 64,
        },
    }


def save_hub_dir(model_cfg: dict, out: Path) -> Path:
    """Build with open_clip's own classes and save in its hub layout (config + safetensors)."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    cfg_dir = out / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "medvl-tiny.json").write_text(json.dumps(model_cfg))
    torch.manual_seed(0)
    model = open_clip.create_model(
        "local-dir:" + str(_as_hub(cfg_dir, model_cfg)), load_weights=False, pretrained_text=False
    )
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
    save_file(model.state_dict(), str(out / "open_clip_model.safetensors"))
    if "hf_tokenizer_name" in model_cfg["text_cfg"]:  # hub dirs carry their tokenizer files
        from transformers import AutoTokenizer

        model.text.transformer.config.save_pretrained(str(out))
        name = model_cfg["text_cfg"]["hf_tokenizer_name"]
        AutoTokenizer.from_pretrained(name).save_pretrained(str(out))
    save_config_for_hf(model, out / "open_clip_config.json", model_config=model_cfg)
    config = json.loads((out / "open_clip_config.json").read_text())
    config["preprocess_cfg"].update(mean=MEAN, std=STD)
    (out / "open_clip_config.json").write_text(json.dumps(config))
    return out


def _as_hub(folder: Path, model_cfg: dict) -> Path:
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {"mean": MEAN, "std": STD}})
    )
    return folder


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("open_clip")
    bert = _bert_dir(root / "bert")
    return {
        "vit": save_hub_dir(TINY_VIT, root / "vit"),
        "biomedclip": save_hub_dir(biomedclip_style(bert), root / "biomedclip"),
    }


class Reference:
    """open_clip's own model, transform and tokenizer for a hub directory."""

    def __init__(self, directory: Path) -> None:
        import open_clip

        name = f"local-dir:{directory}"
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)

    @torch.no_grad()
    def images(self, gray: np.ndarray) -> torch.Tensor:
        batch = torch.stack([self.preprocess(Image.fromarray(g).convert("RGB")) for g in gray])
        return self.model.encode_image(batch, normalize=True)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts), normalize=True)


def _gray(side: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (2, side, side)).astype(np.uint8)


def assert_equal_to(aligner, reference: Reference) -> dict[str, float]:
    gray = _gray(aligner.config.image.image_size)
    with torch.no_grad():
        image = aligner.encode_image(torch.from_numpy(gray).float()[:, None] / 255.0)
        text = aligner.encode_text(**aligner.tokenize(TEXTS))
    diffs = {
        "image": float((image - reference.images(gray)).abs().max()),
        "text": float((text - reference.texts(TEXTS)).abs().max()),
        "scale": abs(
            float(aligner.logit_scale.detach()) - float(reference.model.logit_scale.detach().exp())
        ),
    }
    assert max(diffs.values()) < TOL, diffs
    return diffs


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vit", "biomedclip"])
def test_hub_directory_loads_equal_and_round_trips(hub_dirs, kind: str, tmp_path: Path) -> None:
    directory = hub_dirs[kind]
    assert detect_format(directory) == "open_clip"
    reference = Reference(directory)
    aligner = create_aligner(str(directory))
    assert_equal_to(aligner, reference)
    aligner.save_pretrained(tmp_path / "medvl")
    reloaded = create_aligner(str(tmp_path / "medvl"))
    assert_equal_to(reloaded, reference)
    export_open_clip(reloaded, tmp_path / "export")
    assert_equal_to(reloaded, Reference(tmp_path / "export"))


def test_biomedclip_mlp_projection_has_no_bias_and_its_own_width(hub_dirs) -> None:
    aligner = create_aligner(str(hub_dirs["biomedclip"]))
    proj = aligner.text_tower.model.proj
    linears = [m for m in proj.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.bias for m in linears] == [None, None]
    assert linears[0].in_features == 32 and linears[0].out_features not in (32, 16)


@pytest.mark.slow
def test_model_name_plus_training_checkpoint(hub_dirs, tmp_path: Path) -> None:
    import open_clip

    open_clip.add_model_config(hub_dirs["vit"] / "cfg")
    reference = Reference(hub_dirs["vit"])
    state = {f"module.{k}": v for k, v in reference.model.state_dict().items()}
    checkpoint = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "state_dict": state}, checkpoint)
    aligner = create_aligner("open_clip:medvl-tiny", checkpoint=checkpoint)
    # no preprocess config beside a bare checkpoint: open_clip's defaults (OpenAI's statistics)
    assert aligner.config.image.channel_mean == tuple(MEAN)
    assert_equal_to(aligner, reference)
    broken = tmp_path / "broken.pt"
    torch.save({"state_dict": {"visual.nope": torch.zeros(1)}}, broken)
    with pytest.raises(ValueError, match="broken.pt: open_clip cannot build or load it"):
        create_aligner("open_clip:medvl-tiny", checkpoint=broken)
    with pytest.raises(ValueError, match="needs a checkpoint file"):
        create_aligner("open_clip:medvl-tiny")
