"""A findings classifier on top of an aligner, its loss, and few-shot sampling.

:class:`FindingsClassifier` scores multi-label findings from images. Its head starts as the
zero-shot classifier itself: for finding ``f`` with mean prompt embeddings ``p+`` and ``p-``,
``logit_f = s * (x . p+ - x . p-)``, exactly the zero-shot margin (CheXzero) scaled by the
learned temperature, so any fine-tuning starts from zero-shot performance instead of chance
(the LP-FT / WiSE-FT observation that a good head initialisation protects pretrained features).

Two heads:

``linear``
    ``nn.Linear`` initialised as above; the text tower is not needed after initialisation.
``prompt``
    The prompts stay in the loop: prompt embeddings are recomputed through the text tower at
    every forward, with a learned scale and bias per finding, so LoRA on the text tower (or its
    full fine-tuning) has something to learn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvl.models.zeroshot import PromptBank, ZeroShotClassifier, prompt_texts

UncertainPolicy = Literal["ignore", "positive", "negative"]
HeadKind = Literal["linear", "prompt"]


class PromptHead(nn.Module):
    """Per-finding ``scale * (x . p+ - x . p-) + bias`` with prompts embedded on every call."""

    def __init__(self, aligner: Any, prompts: PromptBank) -> None:
        super().__init__()
        texts, self.spans = prompt_texts(prompts)
        tokens = aligner.tokenize(texts)
        self.register_buffer("input_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("attention_mask", tokens["attention_mask"], persistent=False)
        n = len(prompts)
        self.log_scale = nn.Parameter(torch.full((n,), float(aligner.logit_scale.detach().log())))
        self.bias = nn.Parameter(torch.zeros(n))

    def prompt_embeddings(self, aligner: Any) -> Tensor:
        """``(F, 2, D)``: mean of the normalised prompt embeddings of each set (as zero-shot)."""
        embeds = aligner.encode_text(self.input_ids, self.attention_mask)
        means = torch.stack([embeds[a:b].mean(dim=0) for a, b in self.spans])
        return means.view(-1, 2, embeds.shape[-1])

    @torch.no_grad()
    def to_linear(self, aligner: Any) -> nn.Linear:
        """The same function of the image embedding as one linear layer (prompts embedded once).

        For inference: the text tower then no longer runs on every call.
        """
        prompts = self.prompt_embeddings(aligner)
        head = nn.Linear(prompts.shape[-1], prompts.shape[0]).to(prompts.device)
        head.weight.copy_(self.log_scale.exp()[:, None] * (prompts[:, 0] - prompts[:, 1]))
        head.bias.copy_(self.bias)
        return head

    def forward(self, image_embeds: Tensor, aligner: Any) -> Tensor:
        prompts = self.prompt_embeddings(aligner)
        margins = torch.einsum("bd,fkd->bfk", image_embeds, prompts)
        return self.log_scale.exp() * (margins[..., 0] - margins[..., 1]) + self.bias


class FindingsClassifier(nn.Module):
    """Image -> finding logits: the aligner's image embedding and a head (see module doc).

    ``aligner`` may be a plain :class:`~medvl.models.aligner.MedVLAligner` or its peft LoRA
    wrapper; the classifier only calls ``encode_image`` (and ``encode_text`` for the prompt
    head) on it. ``zero_shot_init=False`` skips the zero-shot initialisation of a linear head
    (for loading saved head weights).
    """

    def __init__(
        self,
        aligner: Any,
        prompts: PromptBank,
        kind: HeadKind = "linear",
        zero_shot_init: bool = True,
    ) -> None:
        super().__init__()
        self.aligner = aligner
        self.kind = kind
        self.prompts = prompts
        self.findings = prompts.findings
        if kind == "prompt":
            self.head: nn.Module = PromptHead(aligner, prompts)
        elif kind == "linear" and zero_shot_init:
            self.head = zero_shot_linear_head(aligner, prompts)
        elif kind == "linear":  # weights about to be loaded: skip embedding the prompts
            self.head = nn.Linear(aligner.config.embed_dim, len(prompts))
        else:
            raise ValueError(f"head kind must be linear or prompt, got {kind!r}")

    def forward(self, image: Tensor) -> Tensor:
        """Finding logits ``(B, F)`` for grayscale images ``(B, 1, H, W)``."""
        embeds = self.aligner.encode_image(image)
        return self.classify(embeds)

    @torch.no_grad()
    def predict_proba(self, image: Tensor) -> Tensor:
        """Sigmoid probabilities ``(B, F)`` on the CPU (call in eval mode)."""
        return torch.sigmoid(self(image).float()).cpu()

    def classify(self, image_embeds: Tensor) -> Tensor:
        """Logits from precomputed (normalised) image embeddings."""
        if self.kind == "prompt":
            return self.head(image_embeds, self.aligner)
        return self.head(image_embeds)


def zero_shot_linear_head(aligner: Any, prompts: PromptBank) -> nn.Linear:
    """A linear head whose sigmoid equals the zero-shot probabilities of ``prompts``."""
    classifier = ZeroShotClassifier(aligner, prompts)
    means = classifier.prompt_embeddings().detach().float().cpu()  # (F, 2, D)
    scale = float(aligner.logit_scale.detach())
    head = nn.Linear(means.shape[-1], means.shape[0])
    with torch.no_grad():
        head.weight.copy_(scale * (means[:, 0] - means[:, 1]))
        head.bias.zero_()
    return head


def binary_targets(labels: Tensor, uncertain: UncertainPolicy) -> Tensor:
    """CheXpert codes -> 1/0 targets, NaN where the label is unknown (or uncertain, ignored)."""
    out = torch.where((labels == 1) | (labels == 0), labels, torch.full_like(labels, float("nan")))
    if uncertain != "ignore":
        out = torch.where(labels == -1, torch.full_like(out, float(uncertain == "positive")), out)
    return out


def masked_bce(logits: Tensor, labels: Tensor, uncertain: UncertainPolicy = "ignore") -> Tensor:
    """Mean binary cross-entropy over known labels only (unmentioned labels are masked).

    CheXpert's U-Ignore / U-Ones / U-Zeros policies for uncertain labels via ``uncertain``. A
    batch without any known label gives a zero loss that still reaches every logit.
    """
    targets = binary_targets(labels.to(logits.device).float(), uncertain)
    known = ~torch.isnan(targets)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits.float()[known], targets[known])


def few_shot_indices(labels: Tensor, study_ids: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """Indices of ``k`` positive and ``k`` negative examples per finding (column), de-duplicated.

    Deterministic and order-independent: candidates are ranked by a hash of ``(seed, study
    id)``, so the same studies are picked whatever the manifest order. Findings with fewer
    than ``k`` examples of a class contribute what they have.
    """
    if k < 1:
        raise ValueError(f"few-shot k must be >= 1, got {k}")

    def rank(i: int) -> tuple[str, int]:
        return hashlib.sha256(f"{seed}:{study_ids[i]}".encode()).hexdigest(), i

    chosen: set[int] = set()
    for column in range(labels.shape[1]):
        for value in (1.0, 0.0):
            candidates = [i for i in range(labels.shape[0]) if labels[i, column] == value]
            chosen.update(sorted(candidates, key=rank)[:k])
    return sorted(chosen)


def image_tower_blocks(tower: nn.Module) -> list[nn.Module]:
    """The image tower's blocks, bottom -> top, for freezing schedules and layer-wise LRs."""
    for path in ("stages", "blocks", "model.encoder.layer", "model.encoder.layers"):
        module: Any = tower
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 0:
            return list(module)
    raise ValueError(f"{type(tower).__name__}: no block list found for partial unfreezing")
