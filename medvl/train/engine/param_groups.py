"""Model blocks, discriminative learning rates and freezing schedules.

Fine-tuning a pretrained tower well means treating its layers differently: the new head learns
fast, the top blocks (task-specific features) slower, the bottom blocks (generic features)
slowest or not at all (ULMFiT; BEiT's layer-wise LR decay). This module gives one small,
model-agnostic vocabulary for that:

- :class:`ModelBlocks`: a model seen as a *head* plus a stack of *blocks*, bottom -> top. Build
  it from modules (``ModelBlocks.from_modules(model, head=[proj], blocks=bert.encoder.layer)``)
  or from parameter-name prefixes (config-friendly). Parameters of the model that belong to
  neither become the *stem*, the bottom-most block (embeddings, patchify convolutions).
- :func:`discriminative_param_groups`: optimizer groups with LR ``lr`` for the head and
  ``lr * layer_decay ** k`` for the block ``k`` places below the head; no weight decay on
  biases and norm weights.
- :class:`FreezeSchedule`: head-only, two-stage (head, then the top N blocks) or progressive
  unfreezing (one more block every K steps). The engine calls :meth:`FreezeSchedule.update`
  before each optimizer step and :meth:`FreezeSchedule.mask_gradients` before stepping.

Under DDP the set of parameters that require gradients must not change after wrapping, so in
distributed runs the schedule leaves ``requires_grad`` alone and drops the gradients of frozen
blocks instead (``AdamW`` skips parameters whose ``grad`` is ``None``, weight decay included).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

logger = logging.getLogger(__name__)

FreezeStrategy = Literal["none", "head_only", "two_stage", "progressive"]


@dataclass
class Block:
    """One named group of parameters that is frozen, thawed and scheduled together."""

    name: str
    params: list[tuple[str, nn.Parameter]]


class ModelBlocks:
    """A model as a head plus blocks ordered bottom -> top (stem first when present).

    Only parameters that require gradients when the object is built are managed, so a
    LoRA-wrapped model (base frozen by peft) exposes just its adapters and head.
    """

    def __init__(self, head: Block, blocks: Sequence[Block]) -> None:
        self.head = head
        self.blocks = [b for b in blocks if b.params]

    @classmethod
    def from_modules(
        cls,
        model: nn.Module,
        head: Iterable[nn.Module],
        blocks: Iterable[nn.Module | Sequence[nn.Module]],
        stem: bool = True,
    ) -> ModelBlocks:
        """Group ``model``'s parameters by module identity.

        Parameters
        ----------
        model
            The whole model; every trainable parameter ends up in exactly one group.
        head
            Modules trained from the first step (projection heads, classifier).
        blocks
            Modules (or lists of modules forming one block), bottom -> top.
        stem
            Put trainable parameters claimed by no module into a bottom ``stem`` block; if
            ``False`` they join the head.
        """
        owner: dict[int, str] = {}
        block_names: list[str] = []
        for i, block in enumerate(blocks):
            modules = [block] if isinstance(block, nn.Module) else list(block)
            block_names.append(f"block{i:02d}")
            for module in modules:
                for p in module.parameters():
                    owner.setdefault(id(p), block_names[-1])
        for module in head:
            for p in module.parameters():
                owner[id(p)] = "head"
        return cls._assemble(model, owner, block_names, stem)

    @classmethod
    def from_prefixes(
        cls,
        model: nn.Module,
        head: Sequence[str],
        blocks: Sequence[str | Sequence[str]],
        stem: bool = True,
    ) -> ModelBlocks:
        """Group parameters by name prefix (``"text_tower.model.encoder.layer.3"``).

        A prefix matches a parameter whose dotted name equals it or starts with it plus ``"."``.
        """

        def match(name: str, prefixes: Sequence[str]) -> bool:
            return any(name == p or name.startswith(p + ".") for p in prefixes)

        owner: dict[int, str] = {}
        block_names = [f"block{i:02d}" for i in range(len(blocks))]
        for name, p in model.named_parameters():
            if match(name, head):
                owner[id(p)] = "head"
                continue
            for block_name, spec in zip(block_names, blocks, strict=True):
                if match(name, [spec] if isinstance(spec, str) else spec):
                    owner[id(p)] = block_name
                    break
        return cls._assemble(model, owner, block_names, stem)

    @classmethod
    def _assemble(
        cls, model: nn.Module, owner: dict[int, str], block_names: list[str], stem: bool
    ) -> ModelBlocks:
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {n: [] for n in ["stem", *block_names]}
        head: list[tuple[str, nn.Parameter]] = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            where = owner.get(id(p), "stem" if stem else "head")
            (head if where == "head" else groups[where]).append((name, p))
        return cls(Block("head", head), [Block(n, ps) for n, ps in groups.items()])

    def __len__(self) -> int:
        return len(self.blocks)

    def describe(self) -> str:
        """One line per group with its parameter count, bottom -> top then head."""
        rows = [*self.blocks, self.head]
        return "\n".join(f"{b.name}: {sum(p.numel() for _, p in b.params):,}" for b in rows)


def _is_no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(".bias")


def _split_decay(
    name: str, params: Sequence[tuple[str, nn.Parameter]], lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    decay = [p for n, p in params if not _is_no_decay(n, p)]
    no_decay = [p for n, p in params if _is_no_decay(n, p)]
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": name})
    if no_decay:
        groups.append(
            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}/no_decay"}
        )
    return groups


def default_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """All trainable parameters at one LR; biases and norm weights without weight decay."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    return _split_decay("all", params, lr, weight_decay)


def discriminative_param_groups(
    blocks: ModelBlocks, lr: float, layer_decay: float = 1.0, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Optimizer groups: head at ``lr``, the block ``k`` places below it at ``lr * layer_decay**k``.

    ``layer_decay=1`` gives every group the same LR; 0.5-0.9 is typical for fine-tuning.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must lie in (0, 1], got {layer_decay}")
    groups = _split_decay("head", blocks.head.params, lr, weight_decay)
    n = len(blocks.blocks)
    for i, block in enumerate(blocks.blocks):
        groups += _split_decay(block.name, block.params, lr * layer_decay ** (n - i), weight_decay)
    if not groups:
        raise ValueError("no trainable parameters in the head or any block")
    return groups


@dataclass
class FreezeConfig:
    """When blocks thaw. ``head_steps`` of head-only training come first in both staged kinds.

    ``two_stage`` then thaws the top ``top_blocks`` blocks (0 = all); ``progressive`` thaws one
    more block, top down, every ``every`` steps.
    """

    strategy: FreezeStrategy = "none"
    head_steps: int = 0
    top_blocks: int = 0
    every: int = 100

    def __post_init__(self) -> None:
        if self.head_steps < 0 or self.top_blocks < 0:
            raise ValueError("head_steps and top_blocks must be >= 0")
        if self.strategy == "progressive" and self.every < 1:
            raise ValueError("progressive unfreezing needs every >= 1")


class FreezeSchedule:
    """Applies a :class:`FreezeConfig` to :class:`ModelBlocks` as training advances."""

    def __init__(self, blocks: ModelBlocks, config: FreezeConfig) -> None:
        self.blocks = blocks
        self.config = config
        self.thawed: int | None = None
        self._frozen: list[nn.Parameter] = []

    def thawed_blocks(self, step: int) -> int:
        """How many blocks, counted from the top, train at optimizer step ``step``."""
        n, c = len(self.blocks), self.config
        if c.strategy == "none":
            return n
        if c.strategy == "head_only" or step < c.head_steps:
            return 0
        if c.strategy == "two_stage":
            return min(n, c.top_blocks) if c.top_blocks else n
        return min(n, 1 + (step - c.head_steps) // c.every)

    def update(self, step: int, toggle_requires_grad: bool = True) -> bool:
        """Freeze/thaw for ``step``; returns whether anything changed.

        With ``toggle_requires_grad`` (single process) frozen blocks also skip their backward
        pass; otherwise (DDP) only :meth:`mask_gradients` keeps them fixed.
        """
        thawed = self.thawed_blocks(step)
        if thawed == self.thawed:
            return False
        n = len(self.blocks)
        self._frozen = [p for b in self.blocks.blocks[: n - thawed] for _, p in b.params]
        if toggle_requires_grad:
            for i, block in enumerate(self.blocks.blocks):
                for _, p in block.params:
                    p.requires_grad_(i >= n - thawed)
        if self.thawed is not None or thawed < n:
            logger.info("step %d: training head + top %d of %d blocks", step, thawed, n)
        self.thawed = thawed
        return True

    def mask_gradients(self) -> None:
        """Drop the gradients of frozen blocks so the optimizer leaves them untouched."""
        for p in self._frozen:
            p.grad = None

    def trainable_parameters(self) -> int:
        """Parameters updated at the current stage (head + thawed blocks)."""
        n = len(self.blocks)
        thawed = n if self.thawed is None else self.thawed
        rows = [self.blocks.head, *self.blocks.blocks[n - thawed :]]
        return sum(p.numel() for b in rows for _, p in b.params)
