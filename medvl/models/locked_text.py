"""Contrastive training with a locked (frozen) text tower and cached report features.

LiT (Zhai et al., 2022) showed that locking one pretrained tower and training the other into
its space keeps what the locked tower knows. Locking the *text* tower suits a small in-domain
pair set: a general-domain sentence encoder (all-MiniLM-L6-v2, optionally after MLM on
reports) already separates "no pleural effusion" from "small pleural effusion", which a
text tower fitted to a few hundred reports would not learn, and zero-shot prompts stay where
that encoder puts them. A locked tower's outputs never change, so each report is encoded once
and training only runs the image tower and the two projection heads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvl.models.aligner import MedVLAligner

logger = logging.getLogger(__name__)


class LockedTextAligner(nn.Module):
    """An aligner whose text side reads pooled features cached for a fixed set of texts.

    Parameters
    ----------
    aligner
        Trained in place: its text tower is frozen, everything else keeps its own setting.
    texts
        Every text the training batches will contain (duplicates are encoded once).
    batch_size
        Texts per forward pass while filling the cache.
    """

    def __init__(self, aligner: MedVLAligner, texts: Sequence[str], batch_size: int = 64) -> None:
        super().__init__()
        self.aligner = aligner
        for p in aligner.text_tower.parameters():
            p.requires_grad_(False)
        unique = list(dict.fromkeys(texts))
        self.index = {text: i for i, text in enumerate(unique)}
        self.register_buffer("text_features", self._encode(unique, batch_size), persistent=False)
        logger.info("text tower locked: %d distinct reports encoded once", len(unique))

    @torch.no_grad()
    def _encode(self, texts: list[str], batch_size: int) -> Tensor:
        tower = self.aligner.text_tower
        device = next(tower.parameters()).device
        was_training = tower.training
        tower.eval()
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = tower.tokenize(texts[start : start + batch_size])
            chunks.append(tower.encode(**{k: v.to(device) for k, v in tokens.items()}).float())
        tower.train(was_training)
        return torch.cat(chunks)

    def train(self, mode: bool = True) -> LockedTextAligner:
        """Train mode for everything but the locked text tower (its dropout stays off)."""
        super().train(mode)
        self.aligner.text_tower.eval()
        return self

    def forward(self, image: Tensor, texts: Sequence[str]) -> dict[str, Tensor]:
        """Like ``MedVLAligner.forward``, with report texts looked up in the cache."""
        try:
            rows = [self.index[t] for t in texts]
        except KeyError:
            raise KeyError("a batch text was not among the texts cached at construction") from None
        pooled = self.text_features[torch.tensor(rows, device=self.text_features.device)]
        return {
            "image_embeds": self.aligner.encode_image(image),
            "text_embeds": F.normalize(self.aligner.text_projection(pooled), dim=-1),
            "logit_scale": self.aligner.logit_scale,
        }

    def clamp_logit_scale_(self) -> None:
        """Forwarded to the aligner (the engine's ``after_step`` hook calls it)."""
        self.aligner.clamp_logit_scale_()
