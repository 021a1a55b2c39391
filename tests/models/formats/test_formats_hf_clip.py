"""transformers CLIP and SigLIP directories load as medvl aligners equal to the source.

The source library computes on the gray image in RGB with its own processor and tokenizer;
medvl gets the same image as one float channel in [0, 1]. Embeddings, logit scale and bias,
zero-shot probabilities at step 0 agree to 1e-5, after a medvl save/load too, and again after
export back to the source's format, loaded by the source library.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medvl.models import create_aligner
from medvl.models.formats import detect_format
from medvl.models.formats.hf_clip import export_hf_clip
from medvl.models.zeroshot import FindingPrompts, PromptBank, ZeroShotClassifier

TEXTS = ["Large right pleural effusion.", "No acute cardiopulmonary abnormality seen."]
PROMPTS = PromptBank(
    {
        "Pleural Effusion": FindingPrompts(("pleural effusion",), ("no pleural effusion",)),
        "Cardiomegaly": FindingPrompts(("the heart is enlarged",), ("normal heart size",)),
    }
)
TOL = 1e-5


def _pooled(output: object) -> torch.Tensor:
    return getattr(output, "pooler_output", output)


class Source:
    """The source library's own model, processor and tokenizer for one directory."""

    def __init__(self, directory: Path) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.model = AutoModel.from_pretrained(str(directory)).eval()
        self.processor = AutoImageProcessor.from_pretrained(str(directory))
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.siglip = self.model.config.model_type == "siglip"

    def pixel_values(self, gray: np.ndarray) -> torch.Tensor:
        rgb = [np.repeat(image[..., None], 3, axis=-1) for image in gray]
        return self.processor(images=rgb, return_tensors="pt").pixel_values

    def tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.siglip:
            return self.tokenizer(texts, padding="max_length", max_length=64, return_tensors="pt")
        return self.tokenizer(texts, padding=True, return_tensors="pt")

    @torch.no_grad()
    def image_embeds(self, gray: np.ndarray) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=self.pixel_values(gray))
        return F.normalize(_pooled(out), dim=-1)

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(_pooled(self.model.get_text_features(**self.tokens(texts))), dim=-1)

    @torch.no_grad()
    def zero_shot(self, gray: np.ndarray) -> torch.Tensor:
        texts = [t for f in PROMPTS.findings for t in (*PROMPTS[f].positive, *PROMPTS[f].negative)]
        out = self.model(pixel_values=self.pixel_values(gray), **self.tokens(texts))
        logits = out.logits_per_image.view(len(gray), len(PROMPTS), 2)
        return torch.sigmoid(logits[..., 0]) if self.siglip else logits.softmax(-1)[..., 0]


def _pixels(gray: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(gray).float()[:, None] / 255.0


def assert_matches(aligner, source: Source, gray: np.ndarray) -> dict[str, float]:
    with torch.no_grad():
        image = aligner.encode_image(_pixels(gray))
        text = aligner.encode_text(**aligner.tokenize(TEXTS))
    diffs = {
        "image": float((image - source.image_embeds(gray)).abs().max()),
        "text": float((text - source.text_embeds(TEXTS)).abs().max()),
        "scale": abs(
            float(aligner.logit_scale.detach()) - float(source.model.logit_scale.detach().exp())
        ),
    }
    if source.siglip:
        diffs["bias"] = abs(
            float(aligner.logit_bias.detach()) - float(source.model.logit_bias.detach())
        )
    probs = ZeroShotClassifier(aligner, PROMPTS).predict_proba(_pixels(gray))
    diffs["zero_shot"] = float((probs - source.zero_shot(gray)).abs().max())
    assert max(diffs.values()) < TOL, diffs
    return diffs


@pytest.fixture(params=["hf_clip", "hf_siglip"])
def foreign_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"{request.param}_dir")


def test_detects_the_family(hf_clip_dir: Path, hf_siglip_dir: Path) -> None:
    assert detect_format(hf_clip_dir) == "hf_clip"
    assert detect_format(hf_siglip_dir) == "hf_siglip"


def test_loads_equal_to_the_source(foreign_dir: Path, gray_images: np.ndarray) -> None:
    aligner = create_aligner(str(foreign_dir))
    source = Source(foreign_dir)
    assert_matches(aligner, source, gray_images)
    # the pooled vectors are the source's own (CLIP: EOT token, SigLIP: heads), not a mean
    assert aligner.config.text.pooling == "pooler" and aligner.config.image.pooling == "pooler"
    assert aligner.config.image.channel_mean == tuple(source.processor.image_mean)


def test_medvl_save_load_and_export_round_trip(
    foreign_dir: Path, gray_images: np.ndarray, tmp_path: Path
) -> None:
    aligner = create_aligner(str(foreign_dir))
    aligner.save_pretrained(tmp_path / "medvl")
    reloaded = create_aligner(str(tmp_path / "medvl"))
    saved = json.loads((tmp_path / "medvl" / "config.json").read_text())
    assert saved["aligner"]["image"]["channel_mean"] == list(aligner.config.image.channel_mean)
    source = Source(foreign_dir)
    assert_matches(reloaded, source, gray_images)
    export_hf_clip(reloaded, tmp_path / "export")
    exported = Source(tmp_path / "export")
    assert type(exported.model) is type(source.model)
    torch.testing.assert_close(
        exported.image_embeds(gray_images), source.image_embeds(gray_images), atol=TOL, rtol=0
    )
    torch.testing.assert_close(
        exported.text_embeds(TEXTS), source.text_embeds(TEXTS), atol=TOL, rtol=0
    )
    assert_matches(create_aligner(str(tmp_path / "export")), source, gray_images)


def test_a_folder_of_another_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"config.json: holds 'bert'; expected a medvl aligner"):
        create_aligner(str(tmp_path))
    with pytest.raises(ValueError, match="no config.json"):
        create_aligner(str(tmp_path.parent))


def test_missing_or_mismatched_preprocessing_is_an_error(
    hf_siglip_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "siglip"
    shutil.copytree(hf_siglip_dir, copy)
    processor = json.loads((copy / "preprocessor_config.json").read_text())
    (copy / "preprocessor_config.json").write_text(
        json.dumps({**processor, "size": {"height": 48, "width": 48}})
    )
    with pytest.raises(
        ValueError, match="input size 48 does not match the vision config's image_size 32"
    ):
        create_aligner(str(copy))
    (copy / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match="no preprocessor_config.json"):
        create_aligner(str(copy))


def test_weight_source_overrides_on_a_model_directory_are_refused(hf_clip_dir: Path) -> None:
    with pytest.raises(ValueError, match="brings its own weights; image.pretrained"):
        create_aligner(str(hf_clip_dir), **{"image.pretrained": "/w/x.pth"})


def test_a_clip_directory_as_text_tower_pools_like_clip(hf_clip_dir: Path) -> None:
    from medvl.models.towers import TextTowerConfig, build_text_tower

    config = TextTowerConfig(name_or_path=str(hf_clip_dir))
    tower = build_text_tower(config).eval()
    source = Source(hf_clip_dir)
    with torch.no_grad():
        expected = source.model.text_model(**source.tokens(TEXTS)).pooler_output
        torch.testing.assert_close(
            tower.encode(**tower.tokenize(TEXTS)), expected, atol=TOL, rtol=0
        )
    assert config.pooling == "pooler"
