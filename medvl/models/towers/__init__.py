"""Tower factories: one import point for image and text towers.

The image towers live in :mod:`medvl.models.towers.image`, the text towers in
:mod:`medvl.models.towers.text`; both follow one interface (timm-like):

- ``encode(...) -> (B, C)``: pooled features, what the aligner projects into the joint space;
- ``features(...) -> (B, R, C)``: local features (image regions, text tokens) for local losses;
- ``out_dim``: ``C``; ``source_sha256``: checksum of the pretrained weights read, if any;
- ``hf_config_dict()``: the transformers config to rebuild the tower without its weights.
"""

from __future__ import annotations

from medvl.models.towers.grayscale import convert_to_grayscale
from medvl.models.towers.image import (
    IMAGE_ARCHS,
    HFVisionTower,
    ImageTower,
    ImageTowerConfig,
    TinyConvTower,
    TorchvisionTower,
    build_image_tower,
)
from medvl.models.towers.text import (
    TextTower,
    TextTowerConfig,
    build_text_tower,
    minilm_path,
    resolve_text_source,
)

__all__ = [
    "IMAGE_ARCHS",
    "HFVisionTower",
    "ImageTower",
    "ImageTowerConfig",
    "TextTower",
    "TextTowerConfig",
    "TinyConvTower",
    "TorchvisionTower",
    "build_image_tower",
    "build_text_tower",
    "convert_to_grayscale",
    "minilm_path",
    "resolve_text_source",
]
