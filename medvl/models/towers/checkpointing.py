"""Activation checkpointing for the towers: the ``full`` and ``selective`` policies.

Checkpointing trades compute for memory: a checkpointed layer keeps only its input and
recomputes its activations in backward. Both policies are non-reentrant; ``selective`` keeps
the FLOP-heavy outputs (matmuls, convolutions, attention) and recomputes the cheap ops.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

logger = logging.getLogger(__name__)


def _matmul_ops() -> list[Any]:
    """Ops whose outputs selective checkpointing keeps: the FLOP-heavy ones."""
    aten = torch.ops.aten
    names = (
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "convolution",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
    )
    return [getattr(aten, n).default for n in names if hasattr(aten, n)]


def _save_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _MATMULS else CheckpointPolicy.PREFER_RECOMPUTE


_MATMULS = set(_matmul_ops())


def checkpoint_kwargs(policy: str = "full") -> dict[str, Any]:
    """Keyword arguments for ``torch.utils.checkpoint.checkpoint`` under a policy.

    ``full`` recomputes the whole layer in backward (least memory, one extra forward);
    ``selective`` keeps the outputs of matmuls, convolutions and attention and recomputes only
    the cheap elementwise ops (norms, activations, residual adds, dtype casts) between them,
    which frees most of the memory those ops' saved tensors take at a few percent of step time.
    """
    if policy == "full":
        return {"use_reentrant": False}
    if policy == "selective":
        return {
            "use_reentrant": False,
            "context_fn": partial(create_selective_checkpoint_contexts, _save_matmuls),
        }
    raise ValueError(f"checkpoint policy must be 'full' or 'selective', got {policy!r}")


def enable_hf_checkpointing(
    model: nn.Module, every_n_layers: int = 1, policy: str = "full"
) -> None:
    """Turn on non-reentrant activation checkpointing of a transformers model.

    ``every_n_layers > 1`` checkpoints only every n-th layer where transformers supports it,
    trading some memory back for less recomputation; ``policy`` as in :func:`checkpoint_kwargs`.
    """
    kwargs = checkpoint_kwargs(policy)
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(kwargs, every_n_layers=every_n_layers)
    elif hasattr(model, "gradient_checkpointing_enable"):
        if every_n_layers != 1:
            logger.warning(
                "this transformers version checkpoints every layer; ignoring n=%d", every_n_layers
            )
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ValueError(f"{type(model).__name__} does not support activation checkpointing")
