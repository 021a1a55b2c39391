"""A transformers model from its config, also for sub-model configs ``AutoModel`` lacks.

``AutoModel`` maps ``clip_text_model`` but not ``siglip_text_model``: a tower saved from a
SigLIP model is rebuilt from its config's class name (``SiglipTextConfig`` ->
``SiglipTextModel``).
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)


def model_class_for(config: Any) -> Any:
    """The transformers model class that ``config`` builds."""
    import transformers
    from transformers import AutoModel

    mapping = AutoModel._model_mapping
    if type(config) in mapping:
        return mapping[type(config)]
    name = type(config).__name__.removesuffix("Config") + "Model"
    cls = getattr(transformers, name, None)
    if cls is None:
        raise ValueError(f"no transformers model class for config {type(config).__name__}")
    return cls


def model_from_config(config: Any, attn: str, **kwargs: Any) -> nn.Module:
    """Build ``config``'s model asking for attention ``attn`` (the default if unsupported)."""
    cls = model_class_for(config)
    try:
        return cls._from_config(config, attn_implementation=attn, **kwargs)
    except (ValueError, ImportError) as err:
        logger.warning("attention %r unavailable for this model (%s); using the default", attn, err)
        return cls._from_config(config, **kwargs)
