"""A batched call of segment-anything's ``MaskDecoder``: B images with one prompt each.

Upstream ``MaskDecoder.predict_masks`` (segment-anything 1.0) repeats the image embedding once
per prompt with ``torch.repeat_interleave(image_embeddings, tokens.shape[0])``: it is written
for *one* image and many prompts. Feeding B images with B prompts yields B x B pairings (or a
shape error), so MedSAM forked the library and most fine-tuning scripts loop image by image.

:func:`decode_masks` runs the same computation from the decoder's own submodules (its tokens,
two-way transformer, upscaling, hypernetwork MLPs and IoU head), so any ``MaskDecoder`` —
pretrained weights included — is used unchanged, without forking the library. Differences from
upstream, all deliberate:

- ``prompts_per_image`` says how many consecutive prompts belong to each image (1 for
  training), and the image embedding is repeated only when it is > 1;
- only the requested mask tokens go through their hypernetwork MLP (token 0 for a single mask,
  1-3 for multimask), so the others are not in the graph at all; :class:`SamModel` freezes them.

The test suite checks the result against per-image upstream calls numerically.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def decode_masks(
    decoder: nn.Module,
    image_embeddings: Tensor,
    image_pe: Tensor,
    sparse_prompt_embeddings: Tensor,
    dense_prompt_embeddings: Tensor,
    multimask: bool = False,
    prompts_per_image: int = 1,
) -> tuple[Tensor, Tensor]:
    """Low-res mask logits (N, M, 4g, 4g) and IoU predictions (N, M) for N prompts.

    Parameters
    ----------
    decoder
        A segment-anything ``MaskDecoder``.
    image_embeddings
        (B, C, g, g) image embeddings; prompt ``i`` belongs to image ``i // prompts_per_image``.
    image_pe
        (1, C, g, g) dense positional encoding (``prompt_encoder.get_dense_pe()``).
    sparse_prompt_embeddings, dense_prompt_embeddings
        The prompt encoder's outputs for N = B * prompts_per_image prompts.
    multimask
        ``False``: one mask per prompt (token 0); ``True``: the three disambiguating masks.
    """
    n = sparse_prompt_embeddings.shape[0]
    if image_embeddings.shape[0] * prompts_per_image != n:
        raise ValueError(
            f"{image_embeddings.shape[0]} images x {prompts_per_image} prompts each != "
            f"{n} prompt embeddings"
        )
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(n, -1, -1)
    tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

    src = image_embeddings
    if prompts_per_image > 1:
        src = torch.repeat_interleave(src, prompts_per_image, dim=0)
    src = src + dense_prompt_embeddings
    pos_src = image_pe.expand(n, -1, -1, -1)
    b, c, h, w = src.shape

    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]

    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    selected = range(1, decoder.num_mask_tokens) if multimask else range(1)
    hyper_in = torch.stack(
        [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in selected], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
    iou_pred = decoder.iou_prediction_head(iou_token_out)[:, selected.start : selected.stop]
    return masks, iou_pred
