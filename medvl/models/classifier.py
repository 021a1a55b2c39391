"""A findings classifier on top of an aligner: its heads, loss, few-shot sampling, saved form.

:class:`FindingsClassifier` scores multi-label findings from images. Its head starts as the
zero-shot classifier itself: for finding ``f`` with mean prompt embeddings ``p+`` and ``p-``,
``logit_f = s * (x . p+ - x . p-)``, exactly the zero-shot margin (CheXzero) scaled by the
learned temperature, so any fine-tuning starts from zero-shot performance instead of chance
(the LP-FT / WiSE-FT observation that a good head initialisation protects pretrained features).

Three heads:

``linear``
    ``nn.Linear`` initialised as above; the text tower is not needed after initialisation.
``prompt``
    The prompts stay in the loop: prompt embeddings are recomputed through the text tower at
    every forward, with a learned scale and bias per finding, so LoRA on the text tower (or its
    full fine-tuning) has something to learn.
``context``
    CoOp prompt learning (:class:`ContextPromptHead`): learned context word vectors before
    each finding's name, run through the frozen text tower.

A saved classifier is a directory (:meth:`FindingsClassifier.save_pretrained`,
:func:`load_classifier`)::

    config.json        format tag, findings, head kind, fine-tuning mode, base aligner,
                       prompts, SHA-256 of head.safetensors (and of the LoRA adapter)
    head.safetensors   the head's parameters
    adapter/           mode lora: the peft adapter, merged into the base at load
    model/             modes projection, partial and full: the whole fine-tuned aligner

Folders written by ``medvl finetune`` before this format (``head.json`` + ``head.safetensors``,
no checksum) still load.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvl.models.hub import (
    DESCRIPTOR,
    read_saved_json,
    save_state_atomic,
    sha256_file,
    verified_weights,
    verify_sha256,
    write_descriptor,
)
from medvl.models.zeroshot import (
    PromptBank,
    UncertainPolicy,
    ZeroShotClassifier,
    binary_targets,
    prompt_texts,
)

logger = logging.getLogger(__name__)

HeadKind = Literal["linear", "prompt", "context"]
FinetuneMode = Literal[
    "zero_shot", "linear_probe", "projection", "prompt_learning", "lora", "partial", "full"
]
MODES: tuple[str, ...] = (
    "zero_shot", "linear_probe", "projection", "prompt_learning", "lora", "partial", "full"
)  # fmt: skip
WHOLE_MODEL_MODES = ("projection", "partial", "full")  # save the aligner under model/

FORMAT = "medvl-findings-classifier"
FORMAT_VERSION = 1
HEAD_WEIGHTS = "head.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_DIR = "model"
LEGACY_INFO = "head.json"  # the descriptor of `medvl finetune` folders before FORMAT existed


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


CONTEXT_INIT = "a chest x-ray showing"


class ContextPromptHead(nn.Module):
    """CoOp: learned context vectors before each class name, through the frozen text tower.

    Finding ``f`` gets two texts, ``"<ctx> f"`` and ``"<ctx> no f"``; the context tokens'
    word embeddings (one set shared by all texts, initialised from ``context_init`` as CoOp
    does from "a photo of a") are the parameters, the rest of the text tower stays fixed.
    Logits as :class:`PromptHead`: ``scale * (x . t+ - x . t-) + bias``. Needs a text tower
    that pools from hidden states (not a CLIP-style end-of-text pooler) and puts one special
    token before the text (BERT's ``[CLS]``).
    """

    def __init__(self, aligner: Any, prompts: PromptBank, context_init: str = CONTEXT_INIT):
        super().__init__()
        tower = aligner.text_tower
        if tower.config.pooling == "pooler":
            raise ValueError("prompt learning needs a text tower pooled from its hidden states")
        self.context_init = context_init
        names = [name.lower() for name in prompts.findings]
        texts = [
            t for name in names for t in (f"{context_init} {name}", f"{context_init} no {name}")
        ]
        tokens = aligner.tokenize(texts)
        context_ids = tower.tokenizer(context_init, add_special_tokens=False)["input_ids"]
        n = len(context_ids)
        if not n or not bool(
            (tokens["input_ids"][:, 1 : 1 + n] == torch.tensor(context_ids)).all()
        ):
            raise ValueError(f"context_init {context_init!r} does not tokenize as a prefix")
        embedding = tower.model.get_input_embeddings()
        with torch.no_grad():
            words = embedding(tokens["input_ids"]).detach()
        self.register_buffer("words", words, persistent=False)
        self.register_buffer("attention_mask", tokens["attention_mask"], persistent=False)
        self.context = nn.Parameter(words[0, 1 : 1 + n].clone())
        count = len(prompts)
        self.log_scale = nn.Parameter(
            torch.full((count,), float(aligner.logit_scale.detach().log()))
        )
        self.bias = nn.Parameter(torch.zeros(count))

    def class_embeddings(self, aligner: Any) -> Tensor:
        """``(F, 2, D)``: normalised embeddings of each finding's present / absent text."""
        n = self.context.shape[0]
        context = self.context.unsqueeze(0).expand(self.words.shape[0], -1, -1)
        embeds = torch.cat([self.words[:, :1], context, self.words[:, 1 + n :]], dim=1)
        pooled = aligner.text_tower.encode(None, self.attention_mask, inputs_embeds=embeds)
        text = F.normalize(aligner.text_projection(pooled), dim=-1)
        return text.view(-1, 2, text.shape[-1])

    @torch.no_grad()
    def to_linear(self, aligner: Any) -> nn.Linear:
        """The same function of the image embedding as one linear layer (texts embedded once)."""
        texts = self.class_embeddings(aligner)
        head = nn.Linear(texts.shape[-1], texts.shape[0]).to(texts.device)
        head.weight.copy_(self.log_scale.exp()[:, None] * (texts[:, 0] - texts[:, 1]))
        head.bias.copy_(self.bias)
        return head

    def forward(self, image_embeds: Tensor, aligner: Any) -> Tensor:
        margins = torch.einsum("bd,fkd->bfk", image_embeds, self.class_embeddings(aligner))
        return self.log_scale.exp() * (margins[..., 0] - margins[..., 1]) + self.bias


class FindingsClassifier(nn.Module):
    """Image -> finding logits: the aligner's image embedding and a head (see module doc).

    ``aligner`` may be a plain :class:`~medvl.models.aligner.MedVLAligner` or its peft LoRA
    wrapper; the classifier only calls ``encode_image`` (and ``encode_text`` for the prompt
    head) on it. ``zero_shot_init=False`` skips the zero-shot initialisation of a linear head
    (for loading saved head weights). ``weights_sha256`` and ``adapter_sha256`` name the head
    and adapter files a loaded classifier came from (``None`` for a fresh one).
    """

    def __init__(
        self,
        aligner: Any,
        prompts: PromptBank,
        kind: HeadKind = "linear",
        zero_shot_init: bool = True,
        context_init: str = CONTEXT_INIT,
    ) -> None:
        super().__init__()
        self.aligner = aligner
        self.kind = kind
        self.prompts = prompts
        self.findings = prompts.findings
        if kind == "prompt":
            self.head: nn.Module = PromptHead(aligner, prompts)
        elif kind == "context":
            self.head = ContextPromptHead(aligner, prompts, context_init)
        elif kind == "linear" and zero_shot_init:
            self.head = zero_shot_linear_head(aligner, prompts)
        elif kind == "linear":  # weights about to be loaded: skip embedding the prompts
            self.head = nn.Linear(aligner.config.embed_dim, len(prompts))
        else:
            raise ValueError(f"head kind must be linear, prompt or context, got {kind!r}")
        self.weights_sha256: str | None = None
        self.adapter_sha256: str | None = None

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
        if self.kind in ("prompt", "context"):
            return self.head(image_embeds, self.aligner)
        return self.head(image_embeds)

    # ----------------------------------------------------------------------- save / load

    def save_pretrained(
        self, directory: str | Path, base: str | Path, mode: FinetuneMode = "zero_shot"
    ) -> Path:
        """Write the classifier into ``directory`` (see the module doc); return it.

        Parameters
        ----------
        directory
            Where to write; created if needed. ``config.json`` is written last, so it only
            ever names files that are complete.
        base
            The aligner the classifier was built on: a saved aligner directory (recorded as an
            absolute path) or a preset name. Loading rebuilds on it, except in modes
            ``projection``, ``partial`` and ``full``, which save the whole aligner under
            ``model/``.
        mode
            How the classifier was fine-tuned; ``lora`` saves the adapter of the peft-wrapped
            aligner under ``adapter/``.
        """
        from medvl.models.lora import save_adapter

        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        directory = Path(directory)
        payload: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "findings": list(self.findings),
            "head": self.kind,
            "mode": mode,
            "base": str(Path(base).resolve()) if Path(base).is_dir() else str(base),
            "prompts": self.prompts.to_dict(),
        }
        if self.kind == "context":
            payload["context_init"] = self.head.context_init
        if mode == "lora":
            if not hasattr(self.aligner, "peft_config"):
                raise ValueError("mode lora: the aligner carries no peft LoRA adapter to save")
            save_adapter(self.aligner, directory / ADAPTER_DIR)
            payload["adapter_sha256"] = sha256_file(directory / ADAPTER_DIR / ADAPTER_WEIGHTS)
        elif mode in WHOLE_MODEL_MODES:
            self.aligner.save_pretrained(directory / MODEL_DIR)
        self.weights_sha256 = save_state_atomic(self.head, directory / HEAD_WEIGHTS, FORMAT)
        payload["weights_file"] = HEAD_WEIGHTS
        payload["weights_sha256"] = self.weights_sha256
        write_descriptor(directory, payload)
        logger.info(
            "saved findings classifier to %s (sha256 %s)", directory, self.weights_sha256[:12]
        )
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, base: str | Path | None = None
    ) -> FindingsClassifier:
        """Load a saved classifier for inference (eval mode); see :func:`load_classifier`."""
        from safetensors.torch import load_file

        from medvl.models.aligner import create_aligner
        from medvl.models.lora import load_adapter

        directory = Path(directory)
        payload, where = _read_descriptor(directory)
        legacy = where.name == LEGACY_INFO
        if legacy:  # no checksums were recorded: identify the files as they are now
            weights = directory / HEAD_WEIGHTS
            if not weights.is_file():
                raise FileNotFoundError(f"{weights}: head weights missing from the finetune run")
            digest = sha256_file(weights)
        else:
            weights, digest = verified_weights(directory, payload, "classifier", HEAD_WEIGHTS)
        adapter_sha = None
        if payload["mode"] == "lora":
            adapter = directory / ADAPTER_DIR / ADAPTER_WEIGHTS
            if not adapter.is_file():
                raise FileNotFoundError(f"{adapter}: LoRA adapter missing from the classifier")
            if legacy:
                adapter_sha = sha256_file(adapter)
            else:
                adapter_sha = verify_sha256(adapter, payload.get("adapter_sha256"), where)
        if payload["mode"] in WHOLE_MODEL_MODES:
            aligner = create_aligner(str(directory / MODEL_DIR))
        else:
            aligner = create_aligner(str(base or payload["base"]))
            if payload["mode"] == "lora":
                aligner = load_adapter(aligner, directory / ADAPTER_DIR).merge_and_unload()
        prompts = PromptBank.from_dict(payload["prompts"], where=str(where))
        context = payload.get("context_init", CONTEXT_INIT)
        model = cls(aligner, prompts, payload["head"], zero_shot_init=False, context_init=context)
        result = model.head.load_state_dict(load_file(str(weights)), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{weights}: does not fit a {payload['head']} head over {len(prompts)} findings; "
                f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
        model.eval()
        if model.kind in ("prompt", "context"):  # same outputs, no text tower per forward
            model.head, model.kind = model.head.to_linear(aligner), "linear"
        model.weights_sha256, model.adapter_sha256 = digest, adapter_sha
        return model


def load_classifier(path: str | Path, base: str | Path | None = None) -> FindingsClassifier:
    """A saved findings classifier, ready for inference.

    Parameters
    ----------
    path
        A directory written by :meth:`FindingsClassifier.save_pretrained` (every
        ``medvl finetune`` output folder), or one of an older ``medvl finetune``
        (``head.json`` + ``head.safetensors``).
    base
        The aligner to rebuild on instead of the one recorded (e.g. after moving files); not
        used in modes ``projection``, ``partial`` and ``full``, which carry their own aligner.

    Returns
    -------
    FindingsClassifier
        In eval mode, a prompt head folded into the equal linear head (the text tower no
        longer runs per image); the aligner is the saved ``model/``, or the base with the
        LoRA adapter merged in.

    Raises
    ------
    FileNotFoundError
        ``path`` holds neither descriptor, or a file it names is missing.
    ChecksumError
        ``head.safetensors`` or the adapter changed after saving.
    """
    return FindingsClassifier.from_pretrained(path, base)


def _read_descriptor(directory: Path) -> tuple[dict[str, Any], Path]:
    """The saved classifier's descriptor (legacy ``head.json`` in today's keys) and its path."""
    if (directory / DESCRIPTOR).is_file():
        payload = read_saved_json(
            directory, DESCRIPTOR, FORMAT, FORMAT_VERSION, "findings classifier"
        )
        return payload, directory / DESCRIPTOR
    legacy = directory / LEGACY_INFO
    if not legacy.is_file():
        raise FileNotFoundError(
            f"{directory}: not a saved findings classifier (neither {DESCRIPTOR} nor the "
            f"{LEGACY_INFO} of an older medvl finetune run is there)"
        )
    try:
        info = json.loads(legacy.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{legacy}: not valid JSON ({err})") from None
    if "prompts" not in info:
        raise ValueError(f"{legacy}: written by an older medvl without prompts; re-run finetune")
    logger.info("%s: older finetune layout without checksums", directory)
    return {**info, "head": info["kind"]}, legacy


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
    for path in ("stages", "blocks", "model.blocks", "model.encoder.layer", "model.encoder.layers"):
        module: Any = tower
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 0:
            return list(module)
    raise ValueError(f"{type(tower).__name__}: no block list found for partial unfreezing")
