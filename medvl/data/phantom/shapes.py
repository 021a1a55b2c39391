"""Real shapes and cached textures the phantom radiographs are built from.

Two banks come from real annotations shipped with torchxrayvision: lung fields from the V7 Labs
lung masks (``semantic_masks_v7labs_lungs.zip``) and pneumothorax shapes from the SIIM-ACR
masks (``siim-pneumothorax-train-rle.csv.gz``). Decoding them takes seconds, so each bank is
cached as ``.npz`` under a cache directory, keyed by the source file's checksum. Vessel textures
and noise fields are synthetic; they are generated from fixed seeds so every worker process
builds identical ones.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

log = logging.getLogger(__name__)

BANK_RESOLUTION = 256
BANK_VERSION = 5
PTX_BANK_SIZE = 640  # SIIM shapes kept (of 2,669 positive images): enough variety, 2 s to decode


def cache_dir() -> Path:
    """Where decoded shape banks are cached: ``$MEDVL_CACHE_DIR`` or ``~/.cache/medvl``."""
    root = os.environ.get("MEDVL_CACHE_DIR") or Path.home() / ".cache" / "medvl"
    return Path(root) / "phantom"


@dataclass(frozen=True)
class LungBank:
    """Real lung fields, cropped to the box around both lungs and resized to a square.

    ``masks[i, 0]`` is the patient's right lung (image left), ``masks[i, 1]`` the left lung, as
    uint8 coverage 0..255; ``aspect[i]`` is the original box height / width.
    """

    masks: np.ndarray
    aspect: np.ndarray

    def __len__(self) -> int:
        return int(self.masks.shape[0])


@dataclass(frozen=True)
class PneumothoraxBank:
    """Real pneumothorax shapes in the 1024x1024 SIIM frame, downsampled to a square.

    ``side[i]`` is 0 for the patient's right (image left) and 1 for the left; ``area[i]`` is the
    fraction of the frame covered; ``envelope[side]`` is the (lateral x, top y, bottom y) of the
    pleural space of a typical SIIM radiograph, in [0, 1] frame units (5th/95th percentiles of
    the shapes' extents); with the frame's midline it registers shapes to a phantom hemithorax.
    """

    masks: np.ndarray
    side: np.ndarray
    area: np.ndarray
    envelope: np.ndarray

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _cached(name: str, source: Path, build) -> dict[str, np.ndarray]:
    """Load ``name`` from the cache if it was built from the same source bytes, else build it."""
    target = cache_dir() / f"{name}-v{BANK_VERSION}-{_file_digest(source)}.npz"
    if target.is_file():
        with np.load(target) as data:
            return {k: data[k] for k in data.files}
    log.info("decoding %s into the phantom shape cache (once)", source.name)
    arrays = build(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    tmp.replace(target)
    return arrays


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed background (one labelling pass; faster than iterative hole filling)."""
    labels, _ = ndi.label(~mask)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ~np.isin(labels, border)


def _solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area (1 for a convex shape)."""
    from scipy.spatial import ConvexHull

    edge = mask & ~ndi.binary_erosion(mask)
    return float(mask.sum() / max(ConvexHull(np.argwhere(edge)).volume, 1.0))


def _two_lungs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Split a binary lung annotation into (image-left, image-right) lungs, or None if unusable.

    Unusable: empty, one lung only, a lung cut by the image border, a box-shaped lung (a crude
    annotation), or lungs not side by side or of very different heights.
    """
    labels, count = ndi.label(mask)
    if count < 2:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:2]
    if sizes[order[1]] < 0.35 * sizes[order[0]] or sizes[order[1]] < 0.02 * mask.size:
        return None
    lungs = []
    for idx in order:
        lung = _fill_holes(labels == idx + 1)
        rows, cols = np.nonzero(lung.any(1))[0], np.nonzero(lung.any(0))[0]
        h, w = mask.shape
        if rows[0] == 0 or cols[0] == 0 or rows[-1] == h - 1 or cols[-1] == w - 1:
            return None
        box_area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        if lung.sum() > 0.9 * box_area:
            return None
        lungs.append((cols.mean(), rows[-1] - rows[0] + 1, lung))
    (xa, ha, a), (xb, hb, b) = sorted(lungs, key=lambda t: t[0])
    xs = np.nonzero((a | b).any(0))[0]
    if xb - xa < 0.3 * (xs[-1] - xs[0] + 1) or min(ha, hb) < 0.6 * max(ha, hb):
        return None
    return a, b


def _smooth_lung(lung: np.ndarray, res: int) -> np.ndarray | None:
    """Resize one lung to ``res`` x ``res``; close notches (excluded lesions, label gaps).

    Returns None for shapes that stay far from convex (solidity < 0.8): crude annotations.
    """
    small = np.asarray(Image.fromarray(lung.astype(np.uint8) * 255).resize((res, res))) > 127
    pad, radius = res // 16, res / 32
    grown = ndi.distance_transform_edt(~np.pad(small, pad)) <= radius  # closing via two EDTs
    closed = (ndi.distance_transform_edt(grown) > radius)[pad:-pad, pad:-pad] | small
    closed = _fill_holes(closed)
    if _solidity(closed) < 0.8:
        return None
    return closed.astype(np.uint8) * 255


def _build_lung_bank(zip_path: Path) -> dict[str, np.ndarray]:
    masks, aspects = [], []
    res = BANK_RESOLUTION
    with zipfile.ZipFile(zip_path) as zf:
        for name in sorted(n for n in zf.namelist() if not n.endswith("/")):
            with Image.open(io.BytesIO(zf.read(name))) as im:
                im.draft("L", (512, 512))
                gray = im.convert("L")
                gray.thumbnail((512, 512))
                binary = np.asarray(gray) > 127
            pair = _two_lungs(binary)
            if pair is None:
                continue
            union = pair[0] | pair[1]
            rows, cols = np.nonzero(union.any(1))[0], np.nonzero(union.any(0))[0]
            box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            chans = [_smooth_lung(lung[box], res) for lung in pair]
            if any(c is None for c in chans):
                continue
            masks.append(np.stack(chans))
            aspects.append((rows[-1] - rows[0] + 1) / (cols[-1] - cols[0] + 1))
    if not masks:
        raise ValueError(f"{zip_path}: no usable two-lung masks found")
    return {"masks": np.stack(masks), "aspect": np.asarray(aspects, np.float32)}


def load_lung_bank(zip_path: str | Path) -> LungBank:
    """Real lung templates from the V7 Labs lung-mask archive (cached after the first call)."""
    arrays = _cached("lungs", Path(zip_path), _build_lung_bank)
    return LungBank(masks=arrays["masks"], aspect=arrays["aspect"])


def _build_ptx_bank(csv_path: Path) -> dict[str, np.ndarray]:
    from medvl.data.sources.siim_pneumothorax import decode_image_masks, read_rle_table

    table, _ = read_rle_table(csv_path)
    ids = sorted(image_id for image_id, rles in table.items() if rles)
    ids = ids[:: max(1, len(ids) // PTX_BANK_SIZE)][:PTX_BANK_SIZE]
    res, factor = BANK_RESOLUTION, 1024 // BANK_RESOLUTION
    masks, sides, areas = [], [], []
    for image_id in ids:
        full = decode_image_masks(table[image_id], (1024, 1024))
        small = full.reshape(res, factor, res, factor).mean((1, 3)) >= 0.5
        if small.sum() < 4:
            continue
        labels, count = ndi.label(small)
        largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
        shape = labels == largest  # one side only: bilateral annotations keep their larger part
        masks.append(shape)
        sides.append(int(np.nonzero(shape.any(0))[0].mean() >= res / 2))
        areas.append(shape.mean())
    masks_arr, sides_arr = np.stack(masks), np.asarray(sides, np.int8)
    envelope = np.zeros((2, 3), np.float32)
    for side in (0, 1):
        chosen = masks_arr[sides_arr == side]
        cols, rows = chosen.any(1), chosen.any(2)
        first_col, last_col = cols.argmax(1), res - 1 - cols[:, ::-1].argmax(1)
        lateral = np.percentile(first_col, 5) if side == 0 else np.percentile(last_col + 1, 95)
        top = np.percentile(rows.argmax(1), 5)
        bottom = np.percentile(res - rows[:, ::-1].argmax(1), 95)
        envelope[side] = np.array([lateral, top, bottom]) / res
    return {
        "masks": np.packbits(masks_arr, axis=-1),
        "side": sides_arr,
        "area": np.asarray(areas, np.float32),
        "envelope": envelope,
    }


def load_pneumothorax_bank(csv_path: str | Path) -> PneumothoraxBank:
    """Real pneumothorax shapes decoded from the SIIM RLE table (cached after the first call)."""
    arrays = _cached("pneumothorax", Path(csv_path), _build_ptx_bank)
    masks = np.unpackbits(arrays["masks"], axis=-1, count=BANK_RESOLUTION).astype(bool)
    return PneumothoraxBank(
        masks=masks, side=arrays["side"], area=arrays["area"], envelope=arrays["envelope"]
    )


def _grow_vessels(draw: ImageDraw.ImageDraw, rng: np.random.Generator, start, angle, width, res):
    """Draw one branching vessel tree: segments taper and fork as they run to the periphery."""
    stack = [(np.asarray(start, float), angle, width, 0)]
    while stack:
        point, theta, w, depth = stack.pop()
        length = res * rng.uniform(0.035, 0.07) * (1.0 - 0.06 * depth)
        end = point + length * np.array([np.cos(theta), np.sin(theta)])
        draw.line(
            [tuple(point), tuple(end)], fill=float(0.3 + 0.7 * w / 9.0), width=max(1, round(w))
        )
        if depth >= 7 or w < 1.2:
            continue
        for turn in rng.uniform(0.25, 0.6, size=2) * np.array([-1.0, 1.0]):
            stack.append((end, theta + turn, w * rng.uniform(0.68, 0.82), depth + 1))


@lru_cache(maxsize=2)
def vessel_bank(count: int = 6, res: int = 512) -> tuple[np.ndarray, ...]:
    """Synthetic lung-marking textures in the frame of the box around both lungs.

    Trees start at the two hila and branch outward; intensity tapers with vessel width so the
    markings fade toward the periphery as on a radiograph. Seeded: identical in every process.
    """
    out = []
    for k in range(count):
        rng = np.random.default_rng(10_000 + k)
        img = Image.new("F", (res, res), 0.0)
        draw = ImageDraw.Draw(img)
        for hx, sign in ((0.30, 1.0), (0.70, -1.0)):
            for _ in range(9):
                angle = np.pi / 2 + sign * rng.uniform(0.1, 1.9) * np.pi / 2
                start = (hx * res + rng.normal(0, 0.015 * res), res * rng.uniform(0.36, 0.52))
                _grow_vessels(draw, rng, start, angle, rng.uniform(6.0, 9.0), res)
        tex = ndi.gaussian_filter(np.asarray(img, np.float32), 2.0)
        out.append(np.clip(tex, 0.0, 1.0))
    return tuple(out)


@lru_cache(maxsize=4)
def noise_field(size: int) -> np.ndarray:
    """A fixed white-noise field a little larger than the image; crops give per-image noise."""
    rng = np.random.default_rng(20_000 + size)
    return rng.standard_normal((size + 64, size + 64), dtype=np.float32)


def noise_crop(size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` x ``size`` crop of the fixed noise field at a random offset and flip.

    Flips reverse rows or columns only (no transpose), so the crop stays cache-friendly.
    """
    field = noise_field(size)
    y, x = rng.integers(0, 64, size=2)
    crop = field[y : y + size, x : x + size]
    return crop[::-1] if rng.random() < 0.5 else crop
