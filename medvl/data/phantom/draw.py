"""Pathology drawn into a frontal phantom: lung and pleural findings on the working grid.

Each ``draw_*`` function adds one finding to a :class:`Canvas`: density on the grid (upsampled
later), a change of the lung-marking gain (zero in a pneumothorax, negative in consolidation so
the markings turn into air bronchograms), and its ground-truth mask. Small sharp things
(nodules, devices, pleural lines, fracture lines) are full-resolution patches; they live in
``phantom_stamps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from medvl.data.phantom.anatomy import LEFT, RIGHT, Anatomy, grid_axes, smoothstep, warp_box
from medvl.data.phantom.plan import FindingSpec
from medvl.data.phantom.shapes import PneumothoraxBank

SIDE_NAMES = ("right", "left")


@dataclass
class Patch:
    """A full-resolution piece of an image: values placed at (y0, x0)."""

    y0: int
    x0: int
    values: np.ndarray


@dataclass
class Canvas:
    """A phantom under construction: grid-level density and masks plus full-size patches."""

    anatomy: Anatomy
    size: int  # full image size in pixels
    spacing: float  # mm per full-size pixel
    density: np.ndarray
    vessel_gain: np.ndarray
    grid_masks: dict[str, np.ndarray] = field(default_factory=dict)
    patches: list[Patch] = field(default_factory=list)  # density added at full size
    patch_masks: list[tuple[str, Patch]] = field(default_factory=list)  # unions by name
    pleural_line: np.ndarray | None = None  # pneumothorax coverage whose edge gets a line

    @classmethod
    def start(cls, anatomy: Anatomy, size: int, spacing: float) -> Canvas:
        """A canvas holding the normal anatomy."""
        return cls(
            anatomy=anatomy,
            size=size,
            spacing=spacing,
            density=anatomy.density.copy(),
            vessel_gain=anatomy.lungs.sum(0),
        )

    @property
    def scale(self) -> float:
        """Full-size pixels per grid pixel."""
        return self.size / self.anatomy.w

    def mm(self, value: float) -> float:
        """A length in mm as full-size pixels."""
        return value / self.spacing

    def add_mask(self, name: str, coverage: np.ndarray) -> None:
        """Record a grid-level mask (coverage 0..1); several calls with one name are merged."""
        old = self.grid_masks.get(name)
        self.grid_masks[name] = coverage if old is None else np.maximum(old, coverage)


def _grid(w: int):
    return grid_axes(w)


def _zone_rows(anatomy: Anatomy, side: int, zone: str) -> tuple[float, float]:
    """Row range of an upper / middle / lower third of one hemithorax (all rows for "")."""
    _, y0, _, y1 = anatomy.side_box(side)
    thirds = {"upper": (0.0, 0.36), "middle": (0.3, 0.66), "lower": (0.6, 1.0)}
    a, b = thirds.get(zone, (0.0, 1.0))
    return y0 + a * (y1 - y0), y0 + b * (y1 - y0)


def pick_point(
    canvas: Canvas, side: int, zone: str, rng: np.random.Generator, min_cover: float = 0.95
) -> tuple[float, float]:
    """A random grid point well inside one lung (and zone): (row, col)."""
    lungs = canvas.anatomy.lungs[side]
    r0, r1 = _zone_rows(canvas.anatomy, side, zone)
    rows = np.arange(lungs.shape[0])[:, None]
    ok = (lungs >= min_cover) & (rows >= r0) & (rows <= r1)
    flat = np.flatnonzero(ok)
    if flat.size == 0:
        flat = np.flatnonzero(lungs >= 0.5)
    index = int(flat[rng.integers(flat.size)])
    return float(index // lungs.shape[1]), float(index % lungs.shape[1])


def draw_effusion(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Basal fluid with a meniscus rising laterally; the costophrenic angle fills first."""
    a = canvas.anatomy
    ys, xs = _grid(a.w)
    for side in spec.sides:
        x0, y0, x1, y1 = a.side_box(side)
        height = y1 - y0
        depth = height * (0.05 + 0.38 * spec.severity**1.3) * rng.uniform(0.85, 1.15)
        level = a.base_row[side] - depth
        lateral = (x0 - xs) / (x0 - x1) if side == LEFT else (x1 - xs) / (x1 - x0)
        meniscus = level - 0.5 * depth * np.clip(lateral, 0.0, 1.0) ** 2
        fade = 0.02 * a.w + 0.25 * depth
        fluid = a.lungs[side] * smoothstep(meniscus - fade, meniscus + 0.3 * fade, ys)
        canvas.density += fluid * (a.air * rng.uniform(0.85, 1.0) + 0.03 * spec.conspicuity)
        canvas.vessel_gain *= 1.0 - fluid
        core = a.lungs[side] * (ys >= meniscus)
        canvas.add_mask(f"pleural_effusion_{SIDE_NAMES[side]}", core.astype(np.float32))


def _register_ptx(a: Anatomy, bank: PneumothoraxBank, index: int, side: int) -> np.ndarray:
    """Warp one SIIM shape so the SIIM pleural envelope lands on this hemithorax."""
    lat_e, top_e, bot_e = bank.envelope[side]
    x0, y0, x1, _ = a.side_box(side)
    lat = float(x0 if side == RIGHT else x1)
    mid, top, bottom = a.midline, float(y0), a.base_row[side]
    sx = (mid - lat) / (0.5 - lat_e)
    sy = (bottom - top) / (bot_e - top_e)
    box = (lat - lat_e * sx, top - top_e * sy, lat + (1.0 - lat_e) * sx, top + (1.0 - top_e) * sy)
    return warp_box(bank.masks[index].astype(np.float32), a.w, box)


def draw_pneumothorax(
    canvas: Canvas, spec: FindingSpec, rng: np.random.Generator, bank: PneumothoraxBank
) -> None:
    """A real SIIM pneumothorax shape: lucent, without lung markings, edged by a pleural line."""
    a = canvas.anatomy
    for side in spec.sides:
        choices = np.flatnonzero(bank.side == side)
        order = choices[np.argsort(bank.area[choices])]
        centre = spec.severity * (len(order) - 1)
        band = max(4, len(order) // 6)
        lo = int(np.clip(centre - band, 0, len(order) - 1))
        hi = int(np.clip(centre + band, lo + 1, len(order)))
        ptx = None
        for _ in range(8):
            index = int(order[rng.integers(lo, hi)])
            shape = _register_ptx(a, bank, index, side) * a.lungs[side]
            if shape.sum() >= 6.0:
                ptx = shape
                break
        if ptx is None:  # no real shape fits this hemithorax: an apicolateral rim instead
            ptx = _rim(a, side, 0.015 + 0.03 * spec.severity)
        canvas.density -= ptx * (0.03 + 0.04 * spec.conspicuity)
        canvas.vessel_gain *= 1.0 - ptx
        canvas.add_mask(f"pneumothorax_{SIDE_NAMES[side]}", ptx)
        old = canvas.pleural_line
        canvas.pleural_line = ptx if old is None else np.maximum(old, ptx)


def _rim(a: Anatomy, side: int, width: float) -> np.ndarray:
    """The outer (apical and lateral) rim of one lung, ``width`` x grid wide."""
    ys, xs = grid_axes(a.w)
    inner = gaussian_filter(a.hemithorax[side], width * a.w)
    x0, y0, x1, y1 = a.side_box(side)
    lateral = (
        smoothstep((x0 + x1) / 2, x0, xs) if side == RIGHT else smoothstep((x0 + x1) / 2, x1, xs)
    )
    upper = smoothstep(y0 + 0.7 * (y1 - y0), y0 + 0.3 * (y1 - y0), ys)
    return (a.lungs[side] * smoothstep(0.85, 0.65, inner) * np.maximum(lateral, upper)).astype(
        np.float32
    )


def _blob(w: int, centre: tuple[float, float], radius: float, lobes: int, rng) -> np.ndarray:
    """An irregular blob: a sum of Gaussians scattered around ``centre`` (grid coordinates)."""
    ys, xs = _grid(w)
    field_ = np.zeros((w, w), np.float32)
    for _ in range(lobes):
        cy, cx = np.asarray(centre) + rng.normal(0, 0.45 * radius, size=2)
        r = radius * rng.uniform(0.45, 0.8)
        field_ += np.exp(-(((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * r * r)))
    return field_


def draw_airspace(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Consolidation (dense, air bronchograms), pneumonia (patchy) or opacity (ill-defined haze).

    Airspace disease replaces the air of the lung with fluid, so the added density is a share
    of the air the anatomy removed there (most of it for consolidation, less for a haze).
    """
    a = canvas.anatomy
    name = spec.finding.lower().replace(" ", "_")
    for side in spec.sides:
        _, y0, _, y1 = a.side_box(side)
        radius = (y1 - y0) * (0.06 + 0.12 * spec.severity)
        cy, cx = pick_point(canvas, side, spec.zone, rng)
        if spec.finding == "Consolidation":
            raw, cut, amp, soft = _blob(a.w, (cy, cx), radius, 5, rng), 0.6, 0.8, 0.8
        elif spec.finding == "Pneumonia":
            raw, cut, amp, soft = _blob(a.w, (cy, cx), 1.2 * radius, 9, rng), 0.45, 0.6, 1.5
        else:
            raw, cut, amp, soft = _blob(a.w, (cy, cx), 1.3 * radius, 4, rng), 0.5, 0.45, 3.0
        region = smoothstep(cut - 0.25, cut + 0.1, raw) * a.lungs[side]
        region = gaussian_filter(region, soft) * a.lungs[side]
        texture = 0.75 + 0.5 * gaussian_filter(rng.random(region.shape).astype(np.float32), 1.5)
        fill = amp * rng.uniform(0.8, 1.15) * (0.45 + 0.55 * spec.conspicuity)  # share of air
        canvas.density += region * texture * a.air * fill
        if spec.finding == "Consolidation":
            canvas.vessel_gain -= 1.6 * region * a.lungs[side]
        else:
            canvas.vessel_gain *= 1.0 - 0.5 * region
        canvas.add_mask(f"{name}_{SIDE_NAMES[side]}", (region > 0.5).astype(np.float32))


def draw_edema(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Bilateral perihilar (bat-wing) haze and prominent, indistinct vessels."""
    a = canvas.anatomy
    ys, xs = _grid(a.w)
    top, bottom = a.lung_box[1], a.lung_box[3]
    haze = np.zeros((a.w, a.w), np.float32)
    for side in (RIGHT, LEFT):
        sign = -1.0 if side == RIGHT else 1.0
        hx = a.midline + sign * (a.mediastinal_half + 0.06 * a.w)
        hy = top + 0.5 * (bottom - top)
        sx, sy = (0.08 + 0.06 * spec.severity) * a.w, (0.1 + 0.08 * spec.severity) * a.w
        haze += np.exp(-(((xs - hx) / sx) ** 2 + ((ys - hy) / sy) ** 2)) * a.lungs[side]
    haze = np.clip(haze, 0.0, 1.0)
    fill = (0.2 + 0.3 * spec.severity) * (0.5 + 0.5 * spec.conspicuity) * rng.uniform(0.85, 1.15)
    canvas.density += haze * a.air * fill
    canvas.vessel_gain *= 1.0 + (0.3 + 0.4 * spec.severity) * a.lungs.sum(0)
    canvas.add_mask("edema", (haze > 0.5 * haze.max()).astype(np.float32))


def draw_pleural_thickening(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """A band of pleural thickening along the lateral chest wall (or an apical cap)."""
    a = canvas.anatomy
    ys, xs = _grid(a.w)
    zone = spec.zone or str(rng.choice(["upper", "middle", "lower"]))
    for side in spec.sides:
        hemi = a.hemithorax[side]
        inner = gaussian_filter(hemi, (0.006 + 0.01 * spec.severity) * a.w)
        x0, _, x1, _ = a.side_box(side)
        lateral = xs < (x0 + x1) / 2 if side == RIGHT else xs > (x0 + x1) / 2
        r0, r1 = _zone_rows(a, side, zone)
        rows = smoothstep(r0 - 2, r0 + 4, ys) * smoothstep(r1 + 2, r1 - 4, ys)
        band = hemi * smoothstep(0.9, 0.7, inner) * lateral * rows
        canvas.density += band * (0.07 + 0.08 * spec.conspicuity)
        canvas.vessel_gain *= 1.0 - band
        canvas.add_mask(f"pleural_other_{SIDE_NAMES[side]}", (band > 0.5).astype(np.float32))
