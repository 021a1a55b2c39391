"""A text tower with its family's masked-language-model head, for MLM pretraining.

The head comes from transformers' ``AutoModelForMaskedLM`` on the tower's own config, its
decoder tied to the tower's input embeddings; the encoder is the tower itself (shared, not
copied), so MLM training updates the aligner in place and the head is thrown away afterwards.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskedLM(nn.Module):
    """An encoder with its family's MLM head, scoring only the masked positions.

    transformers' ``*ForMaskedLM`` computes vocabulary logits for every token, although only
    the ~15% masked ones enter the loss; with a 30k vocabulary that projection dominates the
    step. When the head is a single module (BERT's ``cls``, RoBERTa's ``lm_head``) this
    wrapper gathers the masked positions first and runs the head on those alone: the same
    loss, several times cheaper. Other families fall back to the full forward.
    """

    def __init__(self, mlm: nn.Module) -> None:
        super().__init__()
        self.mlm = mlm
        prefix = mlm.base_model_prefix
        heads = [m for name, m in mlm.named_children() if name != prefix]
        self.encoder = getattr(mlm, prefix)
        self.head = heads[0] if len(heads) == 1 else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy over the masked tokens (``labels != -100``)."""
        if self.head is None:
            return self.mlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        masked = labels != -100
        if not bool(masked.any()):  # nothing to predict: a zero loss that keeps the graph
            return hidden.sum() * 0.0
        logits = self.head(hidden[masked])
        return nn.functional.cross_entropy(logits.float(), labels[masked])


def build_mlm_model(text_model: nn.Module) -> MaskedLM:
    """A :class:`MaskedLM` of ``text_model``'s family whose encoder *is* ``text_model``.

    The head comes from ``AutoModelForMaskedLM`` built on the same config; its decoder is
    tied to the encoder's input embeddings and the rest starts from the config's
    initialisation (sentence-transformers checkpoints ship no MLM head).
    """
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_config(text_model.config)
    prefix = mlm.base_model_prefix
    if not isinstance(getattr(mlm, prefix, None), type(text_model)):
        raise TypeError(
            f"{type(mlm).__name__}.{prefix} is not a {type(text_model).__name__}; "
            "this text tower family has no compatible masked-LM head"
        )
    setattr(mlm, prefix, text_model)
    mlm.tie_weights()
    return MaskedLM(mlm)
