"""MONAI transform chains for radiographs: load via ``read_dicom``, resize/pad, augment.

Images leave these chains as float32 tensors of shape (1, H, W) in [0, 1] (display space: the
file's window applied and MONOCHROME1 inverted by :func:`medvl.io.dicom.read_dicom`).

* :class:`LoadDicom` / :class:`LoadDicomd` (in :mod:`medvl.data.loading`, re-exported here)
  read one file into a ``MetaTensor`` (1, H, W) whose meta holds only safe facts (hashed UIDs,
  modality, view, spacing, window, decoder). PNG/JPEG radiographs load the same way.
* :func:`eval_transforms` is deterministic (load, resize the longest side, pad to a square) and
  is what :mod:`medvl.data.cache` stores; :class:`PipelineConfig` names it and hashes it.
* :func:`augment_transforms` holds the random part only, so it can run on cached tensors, and
  :func:`train_transforms` is eval + augment. Augmentation is what is sane for radiographs:
  small rotations, scales and shifts, brightness and contrast. No horizontal flips by default:
  a flipped chest film moves the heart to the right (laterality is diagnostic).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    Resized,
    ScaleIntensityRanged,
    SpatialPadd,
    Transform,
)

from medvl.data.loading import LoadDicom, LoadDicomd, LoadMask, LoadMaskd, Window, read_radiograph

__all__ = [
    "PIPELINE_VERSION",
    "LoadDicom",
    "LoadDicomd",
    "LoadMask",
    "LoadMaskd",
    "PipelineConfig",
    "RequireSameShaped",
    "Chain",
    "augment_transforms",
    "eval_transforms",
    "geometry_transforms",
    "read_radiograph",
    "seg_transforms",
    "train_transforms",
]

PIPELINE_VERSION = 2  # 2: reduced JPEG 2000 decoding, measured plugin order
"""Bumped whenever the deterministic pixel path changes, so old cache entries stop matching."""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides the deterministic (cacheable) pixels of one image.

    ``window`` overrides the file's VOI ((center, width) or a CT preset name); ``frame`` picks
    one frame of a multi-frame file; ``resize="pad"`` keeps the aspect ratio (longest side to
    ``size``, zero padding to a square), ``"stretch"`` resizes both sides to ``size``.
    """

    size: int = 224
    window: Window = None
    window_index: int = 0
    frame: int = 0
    resize: Literal["pad", "stretch"] = "pad"
    interpolation: str = "area"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if self.resize not in ("pad", "stretch"):
            raise ValueError(f"resize must be 'pad' or 'stretch', got {self.resize!r}")
        if isinstance(self.window, list):
            object.__setattr__(self, "window", tuple(self.window))

    def key(self) -> str:
        """A short stable hash of this config and :data:`PIPELINE_VERSION` (the cache key)."""
        plain = {"version": PIPELINE_VERSION, **asdict(self)}
        text = json.dumps(plain, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class RequireSameShaped(Transform):
    """Refuse an image/mask pair whose spatial shapes differ (a mask for another image)."""

    def __init__(self, image_key: str, mask_key: str) -> None:
        self.image_key, self.mask_key = image_key, mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        """Return ``data`` unchanged or raise ``ValueError`` naming the image file."""
        image, mask = data[self.image_key], data[self.mask_key]
        if tuple(image.shape[1:]) != tuple(mask.shape[1:]):
            name = getattr(image, "meta", {}).get("filename_or_obj", "image")
            raise ValueError(
                f"{name}: mask is {tuple(mask.shape[1:])} but the image is "
                f"{tuple(image.shape[1:])}; the mask does not belong to this image"
            )
        return data


class Chain(Compose):
    """``Compose`` that raises the error a transform raised, not MONAI's wrapper.

    MONAI wraps every failure in ``RuntimeError("applying transform ...")`` (once per nesting
    level); callers of these chains want the :class:`DicomReadError` that names the file, so
    batch jobs can record it and go on.
    """

    def __call__(
        self,
        input_: Any,
        start: int = 0,
        end: int | None = None,
        threading: bool = False,
        lazy: bool | None = None,
    ) -> Any:
        """Run the chain; on failure raise the transform's own exception."""
        try:
            return super().__call__(input_, start, end, threading, lazy)
        except RuntimeError as err:
            cause: BaseException = err
            while _is_monai_wrapper(cause) and cause.__cause__ is not None:
                cause = cause.__cause__
            if cause is err:
                raise
            raise cause from None


def _is_monai_wrapper(err: BaseException) -> bool:
    return type(err) is RuntimeError and str(err).startswith("applying transform")


def _geometry(keys: Sequence[str], config: PipelineConfig, modes: Sequence[str]) -> list[Transform]:
    """Resize (longest side, or both) and pad to ``size`` x ``size``; one mode per key."""
    if config.resize == "stretch":
        return [Resized(keys, (config.size, config.size), mode=modes)]
    return [
        Resized(keys, config.size, size_mode="longest", mode=modes),
        SpatialPadd(keys, (config.size, config.size), method="symmetric", mode="constant"),
    ]


def _as_config(size: int | PipelineConfig, options: dict[str, Any]) -> PipelineConfig:
    if isinstance(size, PipelineConfig):
        if options:
            raise TypeError("pass either a PipelineConfig or size plus options, not both")
        return size
    return PipelineConfig(size=size, **options)


def eval_transforms(
    size: int | PipelineConfig = 224,
    *,
    keys: Sequence[str] = ("image",),
    keep_meta: bool = False,
    **options: Any,
) -> Chain:
    """Deterministic chain: load, resize, pad; output float32 (1, size, size) in [0, 1].

    ``size`` may be a :class:`PipelineConfig`; otherwise ``options`` are its other fields
    (``window``, ``window_index``, ``frame``, ``resize``, ``interpolation``). ``keep_meta``
    keeps ``MetaTensor`` outputs (default: plain tensors, cheaper to collate).
    """
    config = _as_config(size, options)
    keys = list(keys)
    target = config.size if config.resize == "pad" else (config.size, config.size)
    return Chain(
        [
            LoadDicomd(keys, config.window, config.window_index, config.frame, target_size=target),
            *geometry_transforms(config, keys=keys, keep_meta=keep_meta).transforms,
        ]
    )


def geometry_transforms(
    config: PipelineConfig, *, keys: Sequence[str] = ("image",), keep_meta: bool = False
) -> Chain:
    """The deterministic part of :func:`eval_transforms` after loading: resize, pad, to float32.

    For callers that already hold decoded pixels (C, H, W), e.g. inference, which also needs the
    full-resolution image for segmentation and so must not decode the file twice.
    """
    keys = list(keys)
    return Chain(
        [
            *_geometry(keys, config, [config.interpolation] * len(keys)),
            EnsureTyped(keys, dtype=torch.float32, track_meta=keep_meta),
        ]
    )


def augment_transforms(
    *,
    keys: Sequence[str] = ("image",),
    prob: float = 0.5,
    rotate_deg: float = 10.0,
    scale: float = 0.1,
    translate: float = 0.05,
    brightness: float = 0.1,
    contrast: tuple[float, float] = (0.8, 1.25),
    flip_prob: float = 0.0,
    size: int | None = None,
) -> Chain:
    """Random radiograph augmentation for tensors already at the model size.

    Rotations of at most ``rotate_deg`` degrees, scaling by 1 +/- ``scale``, shifts of at most
    ``translate`` of the side (needs ``size``; no shift without it), intensity scaled by
    1 +/- ``brightness`` and gamma in ``contrast``, each applied with probability ``prob``;
    values are clipped back to [0, 1]. Horizontal flips only when ``flip_prob > 0``.
    """
    keys = list(keys)
    shift = translate * size if size else 0.0
    chain: list[Transform] = [
        RandAffined(
            keys,
            prob=prob,
            rotate_range=math.radians(rotate_deg),
            scale_range=(scale, scale),
            translate_range=(shift, shift),
            padding_mode="zeros",
        ),
        RandScaleIntensityd(keys, factors=brightness, prob=prob),
        RandAdjustContrastd(keys, prob=prob, gamma=contrast),
    ]
    if flip_prob > 0:
        chain.append(RandFlipd(keys, prob=flip_prob, spatial_axis=1))
    chain += [
        ScaleIntensityRanged(keys, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        EnsureTyped(keys, dtype=torch.float32, track_meta=False),
    ]
    return Chain(chain)


def train_transforms(
    size: int | PipelineConfig = 224,
    *,
    keys: Sequence[str] = ("image",),
    augment: Mapping[str, Any] | None = None,
    **options: Any,
) -> Chain:
    """Eval chain followed by :func:`augment_transforms` (``augment`` holds its options).

    Seed it with ``chain.set_random_state(seed)`` for reproducible epochs.
    """
    config = _as_config(size, options)
    extra = dict(augment or {})
    extra.setdefault("size", config.size)
    return Chain(
        [
            eval_transforms(config, keys=keys),
            augment_transforms(keys=keys, **extra),
        ]
    )


def seg_transforms(
    size: int | PipelineConfig = 256,
    *,
    image_key: str = "image",
    mask_key: str = "mask",
    keep_meta: bool = False,
    **options: Any,
) -> Chain:
    """Image and mask through the same geometry (mask by nearest neighbour, stays 0/1).

    ``keep_meta`` keeps the image a ``MetaTensor`` whose affine holds the output spacing.
    """
    config = _as_config(size, options)
    keys = [image_key, mask_key]
    return Chain(
        [
            LoadDicomd(image_key, config.window, config.window_index, config.frame),
            LoadMaskd(mask_key),
            RequireSameShaped(image_key, mask_key),
            *_geometry(keys, config, [config.interpolation, "nearest-exact"]),
            EnsureTyped(image_key, dtype=torch.float32, track_meta=keep_meta),
            EnsureTyped(mask_key, dtype=torch.float32, track_meta=False),
        ]
    )
