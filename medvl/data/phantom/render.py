"""Turn a plan into a finished phantom image: anatomy, pathology, detail, exposure and masks.

The grid (at most :data:`GRID` pixels a side) holds everything smooth; it is upsampled once,
then lung markings, full-size patches, the pneumothorax pleural line, a side marker and
quantum noise are added at full size. Display values are in [0, 1] (bone and soft tissue
bright); the DICOM writer maps them to stored values and photometric interpretation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter

from medvl.data.phantom import draw as draw
from medvl.data.phantom import stamps as stamps
from medvl.data.phantom.anatomy import LEFT, RIGHT, AnatomyOptions, build_frontal, resize
from medvl.data.phantom.devices import draw_devices, draw_hardware
from medvl.data.phantom.plan import PhantomPlan
from medvl.data.phantom.shapes import LungBank, PneumothoraxBank, noise_crop, vessel_bank
from medvl.findings import (
    ATELECTASIS,
    CONSOLIDATION,
    EDEMA,
    ENLARGED_CARDIOMEDIASTINUM,
    FRACTURE,
    LUNG_LESION,
    LUNG_OPACITY,
    PLEURAL_EFFUSION,
    PLEURAL_OTHER,
    PNEUMONIA,
    PNEUMOTHORAX,
    SUPPORT_DEVICES,
)

GRID = 256


@dataclass
class Banks:
    """The real shapes a worker renders from."""

    lungs: LungBank
    pneumothorax: PneumothoraxBank


@dataclass
class Rendered:
    """One finished phantom image: display pixels, masks and what it shows."""

    pixels: np.ndarray  # float32 (size, size) in [0, 1], bright = dense
    masks: dict[str, np.ndarray]  # structure -> bool (size, size)
    drawn: list[str]  # CheXpert findings visible in this image
    extras: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)
    marker: str = ""


def anatomy_options(plan: PhantomPlan, rng: np.random.Generator) -> AnatomyOptions:
    """Anatomy changes the plan implies: heart size, volume loss, mediastinal width, inflation."""
    loss = [0.0, 0.0]
    atelectasis = plan.get(ATELECTASIS)
    if atelectasis is not None:
        for side in atelectasis.sides:
            loss[side] += 0.03 + 0.07 * atelectasis.severity
    if plan.get("low_volumes") is not None:
        loss = [v + rng.uniform(0.06, 0.12) for v in loss]
    if plan.get("hyperinflation") is not None:
        loss = [v - rng.uniform(0.04, 0.08) for v in loss]
    widening = 0.0
    mediastinum = plan.get(ENLARGED_CARDIOMEDIASTINUM)
    if mediastinum is not None:
        widening = 0.03 + 0.06 * mediastinum.severity * (0.5 + 0.5 * mediastinum.conspicuity)
    return AnatomyOptions(
        ctr=plan.ctr, volume_loss=(loss[0], loss[1]), mediastinal_widening=widening
    )


def _draw_findings(canvas: draw.Canvas, plan: PhantomPlan, rng, banks: Banks) -> None:
    for spec in plan.findings:
        if spec.finding == PLEURAL_EFFUSION:
            draw.draw_effusion(canvas, spec, rng)
        elif spec.finding == PNEUMOTHORAX:
            draw.draw_pneumothorax(canvas, spec, rng, banks.pneumothorax)
        elif spec.finding in (CONSOLIDATION, PNEUMONIA, LUNG_OPACITY):
            draw.draw_airspace(canvas, spec, rng)
        elif spec.finding == EDEMA:
            draw.draw_edema(canvas, spec, rng)
            stamps.draw_kerley_lines(canvas, spec, rng)
        elif spec.finding == PLEURAL_OTHER:
            draw.draw_pleural_thickening(canvas, spec, rng)
        elif spec.finding == LUNG_LESION:
            stamps.draw_lesions(canvas, spec, rng)
        elif spec.finding == ATELECTASIS:
            stamps.draw_atelectasis(canvas, spec, rng)
        elif spec.finding == FRACTURE:
            stamps.draw_fracture(canvas, spec, rng)
        elif spec.finding == SUPPORT_DEVICES:
            draw_devices(canvas, spec, rng)
    for spec in plan.extras:
        if spec.finding == "calcified_granuloma":
            stamps.draw_lesions(canvas, spec, rng)
        elif spec.finding == "surgical_hardware":
            draw_hardware(canvas, spec, rng)


def blur_large(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with a wide kernel (``sigma`` as a fraction of the side), done at 1/8 size."""
    w = field.shape[0]
    small = max(16, w // 8)
    return resize(gaussian_filter(resize(field, (small, small)), sigma * small), field.shape)


def _box_upsample(grid: np.ndarray, scale: float, size: int, pad: int = 2):
    """Upsample only the bounding box of a grid field's support: (slice, values) at full size."""
    rows, cols = np.nonzero(grid.any(1))[0], np.nonzero(grid.any(0))[0]
    if rows.size == 0:
        return None
    g0, g1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, grid.shape[0])
    h0, h1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, grid.shape[1])
    f0, f1 = int(round(g0 * scale)), min(int(round(g1 * scale)), size)
    e0, e1 = int(round(h0 * scale)), min(int(round(h1 * scale)), size)
    values = resize(grid[g0:g1, h0:h1], (f1 - f0, e1 - e0))
    return np.s_[f0:f1, e0:e1], values


def full_masks(canvas: draw.Canvas, lungs: np.ndarray, heart: np.ndarray) -> dict[str, np.ndarray]:
    """Every ground-truth mask at full size: lungs and heart, then each finding's structure."""
    size, scale = canvas.size, canvas.scale
    grids = {
        "lung_right": lungs[RIGHT],
        "lung_left": lungs[LEFT],
        "heart": heart,
        **canvas.grid_masks,
    }
    out: dict[str, np.ndarray] = {}
    for name, grid in grids.items():
        mask = np.zeros((size, size), bool)
        placed = _box_upsample(np.where(grid > 0.02, grid, 0.0).astype(np.float32), scale, size)
        if placed is not None:
            where, values = placed
            mask[where] = values >= 0.5
        if mask.any():
            out[name] = mask
    for name, patch in canvas.patch_masks:
        mask = out.setdefault(name, np.zeros((size, size), bool))
        h, w = patch.values.shape
        mask[patch.y0 : patch.y0 + h, patch.x0 : patch.x0 + w] |= patch.values
    return out


@lru_cache(maxsize=4)
def _font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=height)


def add_side_marker(pixels: np.ndarray, rng: np.random.Generator, letter: str) -> None:
    """Burn a lead side marker ("L" or "R") into display pixels near a top corner.

    Added after any mirroring, so the letter always reads the right way round.
    """
    size = pixels.shape[0]
    height = max(8, size // 28)
    img = Image.new("F", (height * 2, height * 2), 0.0)
    ImageDraw.Draw(img).text((height // 3, height // 6), letter, fill=1.0, font=_font(height))
    y0 = int(rng.uniform(0.02, 0.08) * size)
    right = rng.random() >= 0.5
    x0 = int(size * rng.uniform(0.82, 0.9)) if right else int(rng.uniform(0.03, 0.1) * size)
    glyph = np.asarray(img, np.float32)[: size - y0, : size - x0]
    region = pixels[y0 : y0 + glyph.shape[0], x0 : x0 + glyph.shape[1]]
    np.maximum(region, glyph, out=region)


def compose(
    canvas: draw.Canvas,
    rng: np.random.Generator,
    lungs: np.ndarray,
    one_lung: bool = False,
) -> np.ndarray:
    """Grid density + full-size detail -> display pixels in [0, 1], with exposure variation.

    ``one_lung`` (lateral view) uses one vessel tree of the marking texture, not both.
    """
    a, size, scale = canvas.anatomy, canvas.size, canvas.scale
    density = canvas.density - rng.uniform(0.1, 0.35) * blur_large(canvas.density, 0.15)
    inside = lungs.sum(0) > 0.5
    lo = np.percentile(density[inside], 1) if inside.any() else density.min()
    hi = np.percentile(density, 99.8)
    lo -= (hi - lo) * rng.uniform(0.15, 0.35)
    hi += (hi - lo) * rng.uniform(-0.04, 0.08)
    full = resize(density, (size, size))
    tex = vessel_bank()[int(rng.integers(6))]
    tex = tex[:, ::-1] if rng.random() < 0.5 else tex
    tex = tex[:, : tex.shape[1] // 2] if one_lung else tex
    g0, g1 = int(np.floor(a.lung_box[1])), int(np.ceil(a.lung_box[3]))
    h0, h1 = int(np.floor(a.lung_box[0])), int(np.ceil(a.lung_box[2]))
    y0, y1 = int(round(g0 * scale)), min(int(round(g1 * scale)), size)
    x0, x1 = int(round(h0 * scale)), min(int(round(h1 * scale)), size)
    gain = resize(canvas.vessel_gain[g0:g1, h0:h1], (y1 - y0, x1 - x0))
    amp = rng.uniform(0.045, 0.07) * (0.5 if one_lung else 1.0)
    gain *= resize(tex, (y1 - y0, x1 - x0))
    gain *= amp
    full[y0:y1, x0:x1] += gain
    for patch in canvas.patches:
        h, w = patch.values.shape
        full[patch.y0 : patch.y0 + h, patch.x0 : patch.x0 + w] += patch.values
    if canvas.pleural_line is not None:
        placed = _box_upsample(canvas.pleural_line, scale, size)
        if placed is not None:
            where, cover = placed
            line = np.clip(1.0 - np.abs(cover - 0.5) * 4.0, 0.0, 1.0)
            full[where] += 0.05 * line * (resize(lungs.sum(0), (size, size))[where] > 0.2)
    full += noise_crop(size, rng) * np.float32((hi - lo) * rng.uniform(0.006, 0.02))
    full -= np.float32(lo)
    full *= np.float32(1.0 / (hi - lo))
    return np.clip(full, 0.0, 1.0, out=full)


def render_frontal(
    plan: PhantomPlan, rng: np.random.Generator, size: int, spacing: float, banks: Banks
) -> Rendered:
    """Draw one frontal (PA/AP) phantom for ``plan`` at ``size`` pixels, ``spacing`` mm/pixel."""
    anatomy = build_frontal(rng, min(size, GRID), banks.lungs, anatomy_options(plan, rng))
    canvas = draw.Canvas.start(anatomy, size, spacing)
    _draw_findings(canvas, plan, rng, banks)
    lungs = anatomy.lungs.copy()
    for name, grid in canvas.grid_masks.items():
        if name.startswith(("pleural_effusion", "pneumothorax")):
            side = RIGHT if name.endswith("right") else LEFT
            lungs[side] *= 1.0 - grid
    marker = "L" if rng.random() < 0.7 else ""
    pixels = compose(canvas, rng, lungs)
    if marker:
        add_side_marker(pixels, rng, marker)
    return Rendered(
        pixels=pixels,
        masks=full_masks(canvas, lungs, anatomy.heart),
        drawn=list(plan.drawn),
        extras=[spec.finding for spec in plan.extras],
        measures={"ctr": round(anatomy.ctr, 4), "lung_template": anatomy.template},
        marker=marker,
    )
