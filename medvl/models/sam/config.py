"""SAM configuration, the architectures it names, and the small types around them.

``tiny`` is built from segment-anything's own classes (the DESIGN.md sizes: ~16 ms per 64 px
image on one CPU core); ``vit_b`` / ``vit_l`` / ``vit_h`` come from ``sam_model_registry``,
always without upstream's checkpoint loading (which would unpickle); :func:`medvl.models.sam.model.
build_sam` loads weights itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, NamedTuple

from torch import Tensor, nn

FORMAT = "medvl-sam"
FORMAT_VERSION = 1
SAM_VARIANTS = ("tiny", "vit_b", "vit_l", "vit_h")
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
PATCH_SIZE = 16

Variant = Literal["tiny", "vit_b", "vit_l", "vit_h"]
TrainMode = Literal["decoder", "decoder+lora", "full"]


@dataclass
class SamConfig:
    """Architecture, starting weights and trainable parts of a :class:`SamModel`."""

    variant: Variant = "tiny"
    checkpoint: str | None = None  # local SAM state dict (.pth, .pt or .safetensors)
    img_size: int = 1024  # model input side; vit_* need 1024, tiny takes any multiple of 16
    train_mode: TrainMode = "decoder"
    mask_outputs: Literal["single", "multi"] = "single"  # multi: 3 masks, the IoU head picks
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("qkv",)
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    # sam: longest side to img_size, pad, pixel mean/std; medsam: MedSAM's own inference
    # (squash to img_size x img_size, 8-bit bicubic resize, min-max to [0, 1], no mean/std)
    preprocessing: Literal["sam", "medsam"] = "sam"
    seed: int = 0  # initialisation of weights no checkpoint provides (tiny, random vit_b)

    def __post_init__(self) -> None:
        if self.variant not in SAM_VARIANTS:
            raise ValueError(f"variant must be one of {SAM_VARIANTS}, got {self.variant!r}")
        if self.variant != "tiny" and self.img_size != 1024:
            raise ValueError(
                f"{self.variant} has absolute position embeddings for 1024 px inputs; "
                f"img_size={self.img_size} needs the tiny variant"
            )
        if self.img_size < 2 * PATCH_SIZE or self.img_size % PATCH_SIZE:
            raise ValueError(f"img_size must be a multiple of {PATCH_SIZE} >= 32")
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}")

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for 1024 px inputs)."""
        return self.img_size // PATCH_SIZE

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask logits (a quarter of ``img_size``)."""
        return self.img_size // 4


@dataclass
class SamProvenance:
    """Where a model's starting weights came from."""

    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class SamOutput(NamedTuple):
    """Decoder output: low-res logits (N, M, S/4, S/4) and predicted IoU (N, M)."""

    low_res_logits: Tensor
    iou_pred: Tensor


def tiny_parts(img_size: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The tiny SAM (DESIGN.md): ~16 ms per 64 px image on one CPU core."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        TwoWayTransformer,
    )

    grid = img_size // PATCH_SIZE
    encoder = ImageEncoderViT(
        img_size=img_size,
        patch_size=PATCH_SIZE,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=2,
        out_chans=32,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=2,
        global_attn_indexes=(1,),
    )
    prompt = PromptEncoder(32, (grid, grid), (img_size, img_size), 4)
    decoder = MaskDecoder(
        transformer_dim=32,
        transformer=TwoWayTransformer(depth=1, embedding_dim=32, num_heads=2, mlp_dim=64),
        iou_head_depth=2,
        iou_head_hidden_dim=32,
    )
    return encoder, prompt, decoder


def registry_parts(variant: str) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Encoder, prompt encoder and decoder of an official SAM size, randomly initialised."""
    from segment_anything import sam_model_registry

    sam = sam_model_registry[variant](checkpoint=None)  # never let upstream torch.load
    return sam.image_encoder, sam.prompt_encoder, sam.mask_decoder


def sam_base_class() -> type[nn.Module]:
    """segment-anything's ``Sam`` (imported here: importing it pulls in torchvision)."""
    from segment_anything.modeling import Sam

    return Sam
