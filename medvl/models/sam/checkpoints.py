"""Raw SAM / MedSAM checkpoints in the shapes people have them.

Accepted: a plain ``Sam`` state dict (``sam_vit_b_01ec64.pth``, ``medsam_vit_b.pth``), a
training checkpoint that wraps it (``{"model": ...}`` as MedSAM's trainer saves, or
``{"state_dict": ...}``), and keys prefixed by DDP's ``module.``. Read with
``torch.load(weights_only=True)`` or safetensors, never unpickled. The architecture is told
from the tensors: the encoder width names the variant (32 tiny, 768 vit_b, 1024 vit_l, 1280
vit_h) and the position-embedding grid the input size.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from medvl.models.hub import load_state_dict_file
from medvl.models.sam.config import PATCH_SIZE

PATCH_KEY = "image_encoder.patch_embed.proj.weight"
POS_KEY = "image_encoder.pos_embed"
VARIANT_BY_WIDTH = {32: "tiny", 768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def read_sam_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """A SAM state dict under ``Sam``'s own key names, from any of the accepted shapes.

    Raises
    ------
    ValueError
        The file holds no SAM image encoder (the message names the key looked for).
    """
    state = load_state_dict_file(path)
    for prefix in ("module.", "model.", "sam."):
        if state and all(k.startswith(prefix) for k in state) and PATCH_KEY not in state:
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if PATCH_KEY not in state:
        sample = sorted(state)[:3]
        raise ValueError(f"{path}: not a SAM checkpoint (no {PATCH_KEY}; its keys begin {sample})")
    return state


def checkpoint_architecture(state: dict[str, Tensor], path: str | Path) -> tuple[str, int]:
    """``(variant, img_size)`` that the checkpoint's tensors fit."""
    width = int(state[PATCH_KEY].shape[0])
    variant = VARIANT_BY_WIDTH.get(width)
    if variant is None:
        raise ValueError(
            f"{path}: image encoder width {width} is no SAM variant "
            f"(expected one of {sorted(VARIANT_BY_WIDTH)})"
        )
    grid = int(state[POS_KEY].shape[1]) if POS_KEY in state else 64
    return variant, grid * PATCH_SIZE
