"""Foreign models built by their own libraries with tiny random configs, saved in their formats.

Nothing is downloaded: CLIP's BPE vocabulary comes from the open_clip package, the SigLIP
directory carries the shipped MiniLM (BERT) tokenizer, as MedSigLIP carries its own.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

TOWER = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
SIDE = 32


def write_clip_tokenizer_files(out: Path) -> None:
    """``vocab.json`` + ``merges.txt`` of OpenAI CLIP, built from open_clip's shipped BPE file."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as fh:
        merges = fh.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    byte_tokens = list(bytes_to_unicode().values())
    vocab = [
        *byte_tokens,
        *(t + "</w>" for t in byte_tokens),
        *("".join(m.split()) for m in merges),
        "<|startoftext|>",
        "<|endoftext|>",
    ]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


@pytest.fixture(scope="session")
def hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers CLIPModel directory (processor_config.json, as transformers 5 saves it)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    out = tmp_path_factory.mktemp("hf_clip")
    write_clip_tokenizer_files(out)
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"))
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={**TOWER, "vocab_size": 49408, "max_position_embeddings": 77},
        vision_config={**TOWER, "image_size": SIDE, "patch_size": 8},
        projection_dim=16,
        logit_scale_init_value=3.0,
    )
    CLIPModel(config).save_pretrained(str(out))
    processor = CLIPImageProcessor(
        size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}
    )
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def hf_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers SiglipModel directory (preprocessor_config.json + a BERT tokenizer)."""
    from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    from medvl.models.towers import minilm_path

    out = tmp_path_factory.mktemp("hf_siglip")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config={**TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 64},
        vision_config={**TOWER, "image_size": SIDE, "patch_size": 8},
    )
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-1.5)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    processor = SiglipImageProcessor(size={"height": SIDE, "width": SIDE})
    processor.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def gray_images() -> np.ndarray:
    """Two gray radiograph-like uint8 images at the towers' size (the processors' resize is then
    the identity, so both sides see the same pixels)."""
    return np.random.default_rng(0).integers(0, 256, (2, SIDE, SIDE)).astype(np.uint8)
