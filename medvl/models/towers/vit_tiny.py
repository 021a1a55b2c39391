"""A small random-init ViT image tower (timm's ``VisionTransformer``) for CPU runs with LoRA.

``arch: vit_tiny`` builds ``timm.models.vision_transformer.VisionTransformer`` with one input
channel and the sizes in :class:`~medvl.models.towers.image.ImageTowerConfig`
(``patch_size``, ``vit_depth``, ``vit_width``, ``vit_heads``): 4 layers x 192 wide at 128 px is
about 1.8 M parameters, small enough to train on two CPU cores, and its attention layers
(``attn.qkv``, ``attn.proj``) are where LoRA was designed to sit (CLIP-LoRA, SAMed) — unlike
the tiny CNN's convolutions. Pooled = the CLS token after the final norm; local = the patch
tokens. The config alone rebuilds it, so saved aligners need no transformers config.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from medvl.models.towers.image import ImageTower, ImageTowerConfig


class TimmViTTower(ImageTower):
    """timm's VisionTransformer on gray input, sized by the tower config (random init)."""

    def __init__(self, config: ImageTowerConfig) -> None:
        from timm.models.vision_transformer import VisionTransformer

        super().__init__(config)
        if config.image_size % config.patch_size:
            raise ValueError(
                f"vit_tiny: image_size {config.image_size} is not a multiple of patch_size "
                f"{config.patch_size}"
            )
        if config.vit_width % config.vit_heads:
            raise ValueError(
                f"vit_tiny: vit_width {config.vit_width} is not divisible by vit_heads "
                f"{config.vit_heads}"
            )
        self.model = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            in_chans=1,
            num_classes=0,
            embed_dim=config.vit_width,
            depth=config.vit_depth,
            num_heads=config.vit_heads,
            global_pool="token",
        )
        self.out_dim = config.vit_width

    def forward_both(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        tokens = self.model.forward_features(self.prepare(pixels))
        pooled = self.model.forward_head(tokens, pre_logits=True)
        return pooled, tokens[:, self.model.num_prefix_tokens :]

    def hf_config_dict(self) -> dict[str, Any] | None:
        return None
