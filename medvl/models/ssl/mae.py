"""Masked autoencoding (He et al., 2022) of the ``vit_tiny`` image tower.

The tower's own timm ``VisionTransformer`` is the encoder: its patch embedding and position
embedding run on every patch, then a random ``mask_ratio`` of the patch tokens is dropped per
image (timm's patch-dropout function, which also returns the kept indices) and only the
visible tokens plus CLS pass through the tower's blocks and final norm. A small decoder of
timm ``Block``s with fixed 2-D sin-cos positions puts a learned mask token at every dropped
position and predicts each patch's pixels; the loss is the MSE on the masked patches only,
against pixels normalised per patch (MAE's ``norm_pix_loss``, which its authors found gives
better features than raw pixels).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medvl.models.towers.vit_tiny import TimmViTTower


class MaskedAutoencoder(nn.Module):
    """MAE around a :class:`TimmViTTower`; ``forward(pixels)`` returns the masked-patch loss.

    Parameters
    ----------
    tower
        The image tower to pretrain (trained in place; the decoder is discarded afterwards).
    mask_ratio
        Fraction of patches hidden from the encoder (MAE: 0.75).
    decoder_width, decoder_depth, decoder_heads
        Size of the decoder (MAE keeps it much lighter than the encoder).
    """

    def __init__(
        self,
        tower: TimmViTTower,
        mask_ratio: float = 0.75,
        decoder_width: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
    ) -> None:
        from timm.layers import build_sincos2d_pos_embed
        from timm.models.vision_transformer import Block

        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        self.tower, self.mask_ratio = tower, mask_ratio
        vit = tower.model
        self.grid = tuple(vit.patch_embed.grid_size)
        self.patch = tower.config.patch_size
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
        nn.init.normal_(self.mask_token, std=0.02)
        positions = build_sincos2d_pos_embed(list(self.grid), decoder_width)
        self.register_buffer("decoder_pos", positions.reshape(1, -1, decoder_width), False)
        self.decoder = nn.Sequential(
            *(Block(decoder_width, decoder_heads, qkv_bias=True) for _ in range(decoder_depth))
        )
        self.decoder_norm = nn.LayerNorm(decoder_width)
        self.decoder_pred = nn.Linear(decoder_width, self.patch * self.patch)

    def patchify(self, pixels: Tensor) -> Tensor:
        """``(B, 1, H, W)`` -> ``(B, N, p*p)`` in the patch embedding's row-major order."""
        b, p = pixels.shape[0], self.patch
        rows, cols = self.grid
        x = pixels.reshape(b, rows, p, cols, p).permute(0, 1, 3, 2, 4)
        return x.reshape(b, rows * cols, p * p)

    def encode_visible(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder tokens of CLS + the kept patches, and the kept patch indices ``(B, K)``."""
        from timm.layers.patch_dropout import patch_dropout_forward

        vit = self.tower.model
        x = vit._pos_embed(vit.patch_embed(pixels))
        x, keep = patch_dropout_forward(
            x, self.mask_ratio, vit.num_prefix_tokens, ordered=False, training=True
        )
        return vit.norm(vit.blocks(vit.norm_pre(x))), keep

    def forward(self, pixels: Tensor) -> Tensor:
        """Mean squared error on the masked patches of ``pixels`` ``(B, 1, H, W)`` in [0, 1]."""
        x = self.tower.prepare(pixels)
        tokens, keep = self.encode_visible(x)
        prefix = self.tower.model.num_prefix_tokens
        visible = self.decoder_embed(tokens[:, prefix:])
        b, n = x.shape[0], self.grid[0] * self.grid[1]
        full = self.mask_token.expand(b, n, -1).clone()
        full = full.scatter(1, keep[..., None].expand_as(visible), visible)
        pred = self.decoder_pred(self.decoder_norm(self.decoder(full + self.decoder_pos)))
        target = self.patchify(x)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
        masked = torch.ones(b, n, device=x.device)
        masked.scatter_(1, keep, 0.0)
        per_patch = (pred - target).pow(2).mean(-1)
        return (per_patch * masked).sum() / masked.sum()
