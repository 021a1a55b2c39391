"""Loaders for radiographs and masks: one file in, a channel-first float32 tensor out.

:class:`LoadDicom` reads DICOM through :func:`medvl.io.dicom.read_dicom` (display space: the
file's window applied, MONOCHROME1 inverted) and PNG/JPEG/TIFF radiographs (CheXpert, Open-i)
through Pillow, both as float32 (1, H, W) in [0, 1]. :class:`LoadMask` reads binary masks from
PNG or ``.npy``. Each has a MONAI dictionary twin (``...d``) for use in transform chains.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medvl.io.codecs.reduced import TargetSize
from medvl.io.dicom import DicomReadError, read_dicom

__all__ = ["LoadDicom", "LoadDicomd", "LoadMask", "LoadMaskd", "Window", "read_radiograph"]

RASTER_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")
SAFE_META = (
    "modality", "photometric", "view_position", "rows", "columns", "frames", "bits_stored",
    "pixel_spacing", "window", "voi", "transfer_syntax", "decoder",
    "sop_uid_hash", "series_uid_hash", "study_uid_hash", "reduction",
)  # fmt: skip
Window = tuple[float, float] | str | None
"""A configured VOI window: (center, width) in modality units, a CT preset name, or None."""


def _is_raster(path: str) -> bool:
    """A raster image by its magic, unless "DICM" sits at offset 128 (the DICOM preamble is
    free: many DICOM files put a TIFF header there, so the DICOM check comes first)."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return False
    return any(head.startswith(magic) for magic in RASTER_MAGIC)


def _read_raster(path: str) -> np.ndarray:
    """A PNG/JPEG/TIFF/BMP radiograph as float32 (H, W) in [0, 1] (colour becomes luminance)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "I", "I;16", "I;16B", "F"):
                im = im.convert("L")
            arr = np.asarray(im)
    except (OSError, SyntaxError) as err:
        raise DicomReadError(path, f"not a readable raster image ({type(err).__name__})") from err
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255)
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr.astype(np.float32) / np.float32(65535), 0.0, 1.0)
    low, high = float(arr.min()), float(arr.max())
    scaled = (arr.astype(np.float32) - low) / np.float32(high - low if high > low else 1.0)
    return scaled.astype(np.float32)


def read_radiograph(
    path: str | os.PathLike,
    *,
    window: Window = None,
    window_index: int = 0,
    frame: int | None = 0,
    target_size: TargetSize | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a DICOM (or PNG/JPEG) radiograph as float32 (C, H, W) in [0, 1] plus safe meta.

    ``frame`` selects one frame of a multi-frame file (C = 1); ``None`` keeps all frames as
    channels. ``target_size`` (the size the caller resizes to) lets JPEG 2000 / HTJ2K decode at a
    reduced resolution level (``meta["reduction"]``). Raises :class:`DicomReadError` naming the
    file for every unreadable input.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DicomReadError(path, "file does not exist")
    if _is_raster(path):
        pixels = _read_raster(path)[None]
        meta: dict[str, Any] = {"modality": "", "rows": pixels.shape[1]}
        meta.update(columns=pixels.shape[2], frames=1, voi="raster", decoder="PIL")
    else:
        image = read_dicom(path, window=window, window_index=window_index, target_size=target_size)
        pixels = image.pixels if image.pixels.ndim == 3 else image.pixels[None]
        meta = {name: getattr(image, name) for name in SAFE_META}
    if frame is not None:
        if not 0 <= frame < pixels.shape[0]:
            raise DicomReadError(
                path, f"frame {frame} requested but the image has {pixels.shape[0]} frame(s)"
            )
        pixels = pixels[frame : frame + 1]
    meta["filename_or_obj"] = path
    return np.ascontiguousarray(pixels, dtype=np.float32), meta


class LoadDicom(Transform):
    """Load a radiograph path into a ``MetaTensor`` (1, H, W), float32 in [0, 1].

    The meta holds safe header facts only; ``affine`` carries the pixel spacing (mm) when the
    file states one, so spacing-aware metrics downstream can read it.
    """

    def __init__(
        self,
        window: Window = None,
        window_index: int = 0,
        frame: int | None = 0,
        target_size: TargetSize | None = None,
    ) -> None:
        self.window, self.window_index, self.frame = window, window_index, frame
        self.target_size = target_size

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        """Read ``path``; raises :class:`DicomReadError` for unreadable files."""
        pixels, meta = read_radiograph(
            path,
            window=self.window,
            window_index=self.window_index,
            frame=self.frame,
            target_size=self.target_size,
        )
        scale = 2.0 ** meta.get("reduction", 0)  # a reduced decode has coarser pixels
        spacing = [s * scale for s in meta.get("pixel_spacing") or (1.0, 1.0)]
        affine = torch.diag(torch.tensor([spacing[0], spacing[1], 1.0], dtype=torch.float64))
        meta = {k: v for k, v in meta.items() if v is not None}
        meta.update(spatial_shape=pixels.shape[1:], original_channel_dim=0)
        return MetaTensor(torch.from_numpy(pixels), affine=affine, meta=meta)


class LoadDicomd(MapTransform):
    """Dictionary twin of :class:`LoadDicom`: replaces each path under ``keys`` by its image."""

    def __init__(
        self,
        keys: KeysCollection,
        window: Window = None,
        window_index: int = 0,
        frame: int | None = 0,
        allow_missing_keys: bool = False,
        target_size: TargetSize | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadDicom(window, window_index, frame, target_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key present; returns a new dict."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class LoadMask(Transform):
    """Load a binary mask (PNG or .npy) as float32 (1, H, W) with values 0 and 1.

    Any non-zero pixel is inside the structure. Lossy formats (JPEG) are refused: their ringing
    turns edges into noise.
    """

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        """Read ``path``; raises ``ValueError`` naming the file for unusable masks."""
        path = Path(path)
        suffix = "".join(path.suffixes[-1:]).lower()
        if not path.is_file():
            raise ValueError(f"{path}: mask file does not exist")
        if suffix == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise ValueError(f"{path}: not a readable .npy mask ({err})") from None
        elif suffix in (".png", ".bmp", ".tif", ".tiff"):
            from PIL import Image

            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I") else im)
            except (OSError, SyntaxError) as err:
                raise ValueError(f"{path}: not a readable mask image ({err})") from None
        else:
            raise ValueError(f"{path}: mask format {suffix or '(none)'} is not PNG or .npy")
        arr = np.squeeze(arr)
        if arr.ndim != 2:
            raise ValueError(f"{path}: mask has shape {arr.shape}; a 2-D mask is required")
        return torch.from_numpy((arr != 0).astype(np.float32)[None])


class LoadMaskd(MapTransform):
    """Dictionary twin of :class:`LoadMask`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMask()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every mask key present; returns a new dict."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
