"""Grayscale radiographs into networks pretrained on RGB, without copying pixels.

A network pretrained on RGB expects three channels; a radiograph has one. Repeating it three
times triples the first layer's input memory and work. Instead, the first convolution's RGB
kernels are summed into one input channel: for a gray image ``g`` replicated into ``[g, g, g]``
with one shared normalisation, ``sum_c W_c * g = (sum_c W_c) * g`` exactly, so the converted
network computes the same features at a third of the first layer's cost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sum_rgb_kernel(weight: Tensor) -> Tensor:
    """Fold a 3-input-channel conv kernel into one channel (exact for replicated gray input)."""
    if weight.dim() != 4 or weight.shape[1] not in (1, 3):
        raise ValueError(f"first conv kernel has shape {tuple(weight.shape)}; expected 1 or 3 in")
    return weight.sum(dim=1, keepdim=True) if weight.shape[1] == 3 else weight


def _first_rgb_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name, module
    return None


def convert_to_grayscale(model: nn.Module) -> bool:
    """Replace the first 3-channel ``Conv2d`` of ``model`` by a 1-channel one with summed kernels.

    Also sets ``num_channels = 1`` wherever a submodule or config records it (transformers
    patch embeddings check it). Returns whether a conv was converted.
    """
    found = _first_rgb_conv(model)
    if found is None:
        return False
    name, conv = found
    gray = nn.Conv2d(
        1,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=1,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        gray.weight.copy_(sum_rgb_kernel(conv.weight))
        if conv.bias is not None:
            gray.bias.copy_(conv.bias)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, gray)
    for module in model.modules():
        if getattr(module, "num_channels", None) == 3:
            module.num_channels = 1
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "num_channels", None) == 3:
        config.num_channels = 1
    return True
