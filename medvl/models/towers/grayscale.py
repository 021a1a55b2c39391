"""Grayscale radiographs into networks pretrained on RGB, without copying pixels.

A network pretrained on RGB expects three channels; a radiograph has one. Repeating it three
times triples the first layer's input memory and work. Instead, the first convolution's RGB
kernels are summed into one input channel: for a gray image ``g`` replicated into ``[g, g, g]``
with one shared normalisation, ``sum_c W_c * g = (sum_c W_c) * g`` exactly, so the converted
network computes the same features at a third of the first layer's cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class GrayInputConv(nn.Conv2d):
    """An RGB first convolution fed one gray channel, with the source's per-channel statistics.

    The source normalises each channel, ``x_c = (g - m_c) / s_c``, then convolves. For a gray
    image replicated into RGB this equals ``conv(g, sum_c W_c / s_c) + conv(1, -sum_c W_c
    m_c / s_c)`` exactly (the second term over the same zero padding), so the gray image is
    never copied and the RGB statistics are never averaged into one number. The RGB kernel
    stays the parameter (``weight`` of shape ``(C, 3, k, k)``), so the state dict keeps the
    source's names and shapes and exports back unchanged.
    """

    def __init__(self, conv: nn.Conv2d, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        if conv.in_channels != 3 or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(
                f"cannot fold per-channel statistics into a conv with {conv.in_channels} inputs, "
                f"groups {conv.groups}, padding mode {conv.padding_mode!r}"
            )
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"need 3 means and 3 positive stds, got mean {mean}, std {std}")
        super().__init__(
            3,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        self.weight, self.bias = conv.weight, conv.bias
        self.register_buffer("channel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("channel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, gray: Tensor) -> Tensor:
        if gray.shape[1] != 1:
            raise ValueError(f"GrayInputConv expects one channel, got {gray.shape[1]}")
        weight = self.weight
        std = self.channel_std.to(weight.dtype)
        gain = (weight / std).sum(dim=1, keepdim=True)
        offset = -(weight * (self.channel_mean.to(weight.dtype) / std)).sum(dim=1, keepdim=True)
        out = F.conv2d(gray, gain, self.bias, self.stride, self.padding, self.dilation)
        if self.padding == "valid" or (isinstance(self.padding, tuple) and not any(self.padding)):
            return out + offset.sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        ones = torch.ones_like(gray[:1])
        return out + F.conv2d(ones, offset, None, self.stride, self.padding, self.dilation)


def fold_gray_input(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    """Replace ``model``'s first RGB ``Conv2d`` by a :class:`GrayInputConv`; return its name.

    Submodules that record ``num_channels = 3`` (transformers patch embeddings check it) are
    set to 1; the model's config keeps 3, so a saved config rebuilds the RGB layer.
    """
    found = _first_rgb_conv(model)
    if found is None:
        raise ValueError("the image model has no 3-channel convolution to take a gray input")
    name, conv = found
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, GrayInputConv(conv, tuple(mean), tuple(std)))
    for module in model.modules():
        if getattr(module, "num_channels", None) == 3 and not hasattr(module, "to_dict"):
            module.num_channels = 1
    return name
