"""Segment Anything (SAM) for medvl: build, load, freeze, save, and the trainable forward.

:class:`SamModel` *is* a ``segment_anything.modeling.Sam`` (same submodules, same state-dict
keys, so an official checkpoint loads strictly and a saved ``model.safetensors`` loads back into
upstream SAM), with what fine-tuning needs on top:

- :func:`build_sam` builds ``vit_b`` / ``vit_l`` / ``vit_h`` through ``sam_model_registry`` and
  loads a *local* checkpoint with ``torch.load(weights_only=True)`` (never a pickle that runs
  code), recording its SHA-256; ``tiny`` is an 80k-parameter SAM from segment-anything's own
  classes for tests and the offline demo (no SAM weights can be downloaded here).
- Freezing (:attr:`SamConfig.train_mode`): ``decoder`` (default; image and prompt encoder
  frozen), ``decoder+lora`` (peft LoRA on the image encoder's fused ``qkv`` projections) or
  ``full``. Upstream ``Sam.forward`` runs under ``torch.no_grad``; :meth:`SamModel.forward`
  is the differentiable path (prompt encoder + the batched decoder call of
  :mod:`medvl.models.sam.decoder`).
- The hypernetwork MLPs of mask outputs the training never reads are frozen too: with
  ``mask_outputs="single"`` the three multimask MLPs get no gradient, which otherwise forces
  DDP's ``find_unused_parameters=True``.
- :meth:`SamModel.encoder_identity` is a SHA-256 of the image encoder's weights: the embedding
  cache keys on it, so any change to the encoder invalidates cached embeddings.

A saved model is a directory (``save_pretrained`` / ``from_pretrained``)::

    config.json        format tag, SamConfig, SHA-256 of model.safetensors, provenance
    model.safetensors  every parameter and persistent buffer (LoRA factors included, unmerged)
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medvl.config import ConfigError, from_dict, to_dict
from medvl.models.hub import (
    read_saved_json,
    save_state_atomic,
    sha256_file,
    verified_weights,
    write_descriptor,
)
from medvl.models.sam.checkpoints import checkpoint_architecture, read_sam_checkpoint
from medvl.models.sam.config import (
    FORMAT,
    FORMAT_VERSION,
    SamConfig,
    SamOutput,
    SamProvenance,
    registry_parts,
    sam_base_class,
    tiny_parts,
)
from medvl.models.sam.decoder import decode_masks

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

logger = logging.getLogger(__name__)


class SamModel(sam_base_class()):  # type: ignore[misc]
    """A segment-anything ``Sam`` with config, freezing, a differentiable forward and save/load.

    Build it with :func:`build_sam` or :meth:`from_pretrained`.
    """

    def __init__(self, config: SamConfig) -> None:
        with torch.random.fork_rng(devices=[]):  # seeded init, global RNG left as it was
            torch.manual_seed(config.seed)
            if config.variant == "tiny":
                parts = tiny_parts(config.img_size)
            else:
                parts = registry_parts(config.variant)
        super().__init__(
            *parts, pixel_mean=list(config.pixel_mean), pixel_std=list(config.pixel_std)
        )
        self.config = config
        self.provenance = SamProvenance()
        self.weights_sha256: str | None = None
        self._identity: tuple[int, str] | None = None
        self.lora_applied = False

    # ---------------------------------------------------------------- freezing

    def apply_train_mode(self) -> None:
        """Set ``requires_grad`` for :attr:`SamConfig.train_mode` (and add LoRA if asked)."""
        mode = self.config.train_mode
        self.requires_grad_(mode == "full")
        if mode == "decoder+lora" and not self.lora_applied:
            self.add_lora()
        if mode == "decoder+lora":
            for name, param in self.image_encoder.named_parameters():
                param.requires_grad_("lora_" in name)
        self.mask_decoder.requires_grad_(True)
        for index in self.unused_mask_outputs():
            self.mask_decoder.output_hypernetworks_mlps[index].requires_grad_(False)

    def unused_mask_outputs(self) -> tuple[int, ...]:
        """Mask-token indices whose hypernetwork MLP the configured output never reads."""
        n = self.mask_decoder.num_mask_tokens
        if self.config.mask_outputs == "single":
            return tuple(range(1, n))
        return (0,)

    def add_lora(self) -> None:
        """Inject peft LoRA adapters into the image encoder's attention projections."""
        from peft import LoraConfig, inject_adapter_in_model

        cfg = self.config
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets),
            bias="none",
        )
        inject_adapter_in_model(lora, self.image_encoder)
        self.lora_applied = True
        self._identity = None

    @property
    def encoder_trainable(self) -> bool:
        """Whether training changes the image encoder (then embeddings cannot be cached)."""
        return any(p.requires_grad for p in self.image_encoder.parameters())

    # ---------------------------------------------------------------- forward paths

    def encode(self, pixels: Tensor) -> Tensor:
        """Image embeddings (B, C, S/16, S/16) of normalised, padded pixels (B, 3, S, S)."""
        return self.image_encoder(pixels)

    def normalize(self, gray: Tensor, input_sizes: Tensor) -> Tensor:
        """SAM input (B, 3, S, S) from resized, padded gray (B, 1, S, S) in [0, 1].

        Gray becomes three equal channels on SAM's 0-255 scale, normalised by the pixel mean
        and std; the padding (outside each image's ``input_sizes`` (B, 2) = (h, w)) is set to
        zero after normalisation, as upstream ``Sam.preprocess`` pads. With ``preprocessing:
        medsam`` the pixels (already min-max scaled by :func:`~medvl.models.sam.geometry.
        resize_medsam`) only become three channels, as MedSAM feeds its encoder.
        """
        if self.config.preprocessing == "medsam":  # MedSAM: [0, 1] as given, no padding
            return gray.float().expand(-1, 3, -1, -1)
        x = (gray.float() * 255.0).expand(-1, 3, -1, -1)
        x = (x - self.pixel_mean) / self.pixel_std
        side = x.shape[-1]
        ar = torch.arange(side, device=x.device)
        rows = ar[None, :] < input_sizes[:, 0:1].to(x.device)
        cols = ar[None, :] < input_sizes[:, 1:2].to(x.device)
        valid = (rows[:, :, None] & cols[:, None, :])[:, None]
        return x * valid

    def forward(
        self,
        image_embeddings: Tensor | None = None,
        boxes: Tensor | None = None,
        points: Tensor | None = None,
        point_labels: Tensor | None = None,
        gray: Tensor | None = None,
        input_sizes: Tensor | None = None,
        mask_inputs: Tensor | None = None,
        multimask: bool | None = None,
    ) -> SamOutput:
        """Masks for one prompt per image, differentiable in every trainable part.

        Give ``image_embeddings`` (B, C, g, g) from the cache, or the resized, padded ``gray``
        input (B, 1, S, S) with its ``input_sizes`` (B, 2) to run the encoder (with gradients
        only if it is trainable). Prompts are in the model frame: ``boxes`` (B, 4) xyxy,
        ``points`` (B, K, 2) xy with ``point_labels`` (B, K) 1 / 0 / -1 (positive, negative,
        padding), ``mask_inputs`` (B, 1, S/4, S/4) logits. ``multimask`` defaults to
        ``config.mask_outputs == "multi"``.
        """
        if image_embeddings is None:
            if gray is None or input_sizes is None:
                raise ValueError("give image_embeddings, or gray pixels with input_sizes")
            pixels = self.normalize(gray, input_sizes)
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.encoder_trainable):
                image_embeddings = self.image_encoder(pixels)
        if multimask is None:
            multimask = self.config.mask_outputs == "multi"
        point_pair = None if points is None else (points, point_labels)
        sparse, dense = self.prompt_encoder(points=point_pair, boxes=boxes, masks=mask_inputs)
        logits, iou = decode_masks(
            self.mask_decoder,
            image_embeddings.to(sparse.dtype),
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask=multimask,
        )
        return SamOutput(logits, iou)

    # ---------------------------------------------------------------- identity

    def encoder_identity(self, refresh: bool = False) -> str:
        """SHA-256 over the image encoder's tensors (names, dtypes, shapes, bytes).

        Memoised against the tensors' version counters and storage addresses, so a frozen
        encoder is hashed once per run while any in-place update or replaced tensor rehashes.
        """
        params = list(self.image_encoder.state_dict().items())
        version = hash(tuple((t._version, t.data_ptr()) for _, t in params))
        if self._identity is not None and self._identity[0] == version and not refresh:
            return self._identity[1]
        digest = hashlib.sha256(f"{FORMAT}:{self.config.variant}:{self.config.img_size}".encode())
        for name, tensor in params:
            data = tensor.detach().contiguous().cpu()
            digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
            digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        self._identity = (version, digest.hexdigest())
        return self._identity[1]

    # ---------------------------------------------------------------- save / load

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``; return it."""
        directory = Path(directory)
        self.weights_sha256 = save_state_atomic(self, directory / WEIGHTS_FILE, FORMAT)
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sam": to_dict(self.config),
            "lora_applied": self.lora_applied,
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": self.weights_sha256,
            "encoder_identity": self.encoder_identity(),
            "provenance": to_dict(self.provenance),
        }
        write_descriptor(directory, payload, CONFIG_FILE)
        logger.info("saved SAM to %s (sha256 %s)", directory, self.weights_sha256[:12])
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device | None = None
    ) -> SamModel:
        """Load a saved model after checking its SHA-256; strict, in eval mode, all frozen."""
        directory = Path(directory)
        payload = read_saved_config(directory)
        try:
            config = from_dict(SamConfig, dict(payload["sam"], checkpoint=None))
        except ConfigError as err:
            raise ValueError(f"{directory / CONFIG_FILE}: {err}") from None
        model = cls(config)
        state, digest = _saved_weights(directory, model)
        _load_strict(model, state, directory)
        model.provenance = SamProvenance(**(payload.get("provenance") or {}))
        model.weights_sha256 = digest
        model.requires_grad_(False)
        model.eval()
        return model.to(device) if device is not None else model


def _load_strict(model: nn.Module, state: dict[str, Tensor], source: Path | str) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source}: does not fit the SAM architecture; missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _saved_weights(directory: Path, model: SamModel) -> tuple[dict[str, Tensor], str]:
    """State dict and SHA-256 of a saved medvl SAM, checked; adds LoRA if it was saved with it."""
    from safetensors.torch import load_file

    payload = read_saved_config(directory)
    weights, actual = verified_weights(directory, payload, "SAM", WEIGHTS_FILE)
    if payload.get("lora_applied") and not model.lora_applied:
        model.add_lora()  # LoRA settings of this config must match the saved ones (strict load)
    return load_file(str(weights)), actual


def read_saved_config(directory: str | Path) -> dict[str, Any]:
    """Read and check the ``config.json`` of a saved SAM directory."""
    return read_saved_json(directory, CONFIG_FILE, FORMAT, FORMAT_VERSION, "medvl SAM")


def build_sam(config: SamConfig | None = None, **overrides: Any) -> SamModel:
    """Build SAM from ``config`` (plus keyword overrides), load its checkpoint, freeze it.

    The checkpoint is read from a local path only (``torch.load(weights_only=True)`` or
    safetensors) and loaded strictly; its SHA-256 goes into ``model.provenance``. It may also
    be a saved medvl SAM directory (fine-tuning continues from it; its weights' SHA-256 is
    checked first). A vit_* without checkpoint keeps random weights (benchmarks) and says so.
    """
    if config is None:
        config = SamConfig(**overrides)
    elif overrides:
        config = from_dict(SamConfig, {**to_dict(config), **overrides})
    model = SamModel(config)
    if config.checkpoint:
        path = Path(config.checkpoint)
        if path.is_dir():
            state, digest = _saved_weights(path, model)
        else:
            state, digest = read_sam_checkpoint(path), sha256_file(path)
            found = checkpoint_architecture(state, path)
            if found != (config.variant, config.img_size):
                raise ValueError(
                    f"{path}: holds a SAM {found[0]} for {found[1]} px inputs; the config "
                    f"asks for {config.variant} at {config.img_size} px"
                )
        _load_strict(model, state, path)
        model.provenance = SamProvenance(str(path), digest)
        logger.info("loaded SAM %s from %s", config.variant, path)
    elif config.variant != "tiny":
        logger.warning("SAM %s has random weights (no checkpoint given)", config.variant)
    model.apply_train_mode()
    return model


def create_sam(source: str | Path | SamConfig, **overrides: Any) -> SamModel:
    """Load a saved medvl SAM directory, or build a fresh SAM from a config.

    Parameters
    ----------
    source
        A :class:`SamConfig` (built by :func:`build_sam`, ``overrides`` applied), a directory
        written by :meth:`SamModel.save_pretrained` (loaded frozen, in eval mode;
        ``overrides`` then patch the loaded config), or a raw SAM/MedSAM checkpoint file in
        any shape :func:`~medvl.models.sam.checkpoints.read_sam_checkpoint` accepts (variant
        and input size told from its tensors; ``preprocessing="medsam"`` for MedSAM).
    """
    if isinstance(source, SamConfig):
        return build_sam(source, **overrides)
    path = Path(source)
    if path.is_dir():
        model = SamModel.from_pretrained(path)
        if overrides:
            model.config = from_dict(SamConfig, {**to_dict(model.config), **overrides})
        return model
    if path.is_file():
        variant, img_size = checkpoint_architecture(read_sam_checkpoint(path), path)
        settings = {"variant": variant, "img_size": img_size, **overrides}
        model = build_sam(from_dict(SamConfig, {**settings, "checkpoint": str(path)})).eval()
        model.weights_sha256 = model.provenance.checkpoint_sha256  # results name the file
        return model
    raise FileNotFoundError(f"{path}: neither a saved medvl SAM directory nor a SAM checkpoint")
