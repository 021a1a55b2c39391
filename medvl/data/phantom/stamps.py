"""Small, sharp things drawn at full resolution: lesions, plates, lines, devices, fractures.

Sizes are in millimetres and converted with the phantom's pixel spacing, so a 4 mm granuloma is
4 mm at any image size. Each function adds density patches (and mask patches) to a
:class:`~medvl.data.phantom.draw.Canvas`.
"""

from __future__ import annotations

import numpy as np

from medvl.data.phantom.anatomy import LEFT, RIGHT, smoothstep
from medvl.data.phantom.draw import SIDE_NAMES, Canvas, Patch, pick_point
from medvl.data.phantom.plan import FindingSpec


def to_full(canvas: Canvas, gy: float, gx: float) -> tuple[float, float]:
    """Grid coordinates -> full-size pixel coordinates (pixel centres line up)."""
    s = canvas.scale
    return (gy + 0.5) * s - 0.5, (gx + 0.5) * s - 0.5


def to_full_points(canvas: Canvas, points) -> np.ndarray:
    """Many grid (row, col) points -> an (N, 2) array of full-size coordinates."""
    return np.asarray([to_full(canvas, y, x) for y, x in points])


def add_patch(canvas: Canvas, y0: int, x0: int, values: np.ndarray, mask_name: str = "", mask=None):
    """Clip a patch to the image and record it (and its mask)."""
    h, w = values.shape
    ya, xa = max(0, y0), max(0, x0)
    yb, xb = min(canvas.size, y0 + h), min(canvas.size, x0 + w)
    if ya >= yb or xa >= xb:
        return
    cut = np.s_[ya - y0 : yb - y0, xa - x0 : xb - x0]
    canvas.patches.append(Patch(ya, xa, values[cut].astype(np.float32)))
    if mask_name:
        canvas.patch_masks.append((mask_name, Patch(ya, xa, np.asarray(mask)[cut].astype(bool))))


def _sphere(canvas: Canvas, cy: float, cx: float, radius: float, amp: float, lobes: float, rng):
    """A projected sphere (optionally lobulated) with a one-pixel soft rim; returns patch+mask."""
    half = int(np.ceil(radius * (1.0 + lobes) + 3))
    y0, x0 = int(round(cy)) - half, int(round(cx)) - half
    ys, xs = np.ogrid[y0 : y0 + 2 * half + 1, x0 : x0 + 2 * half + 1]
    dy, dx = ys - cy, xs - cx
    rho, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    r_eff = radius * (
        1.0 + lobes * (0.6 * np.sin(3 * theta + phase[0]) + 0.4 * np.sin(5 * theta + phase[1]))
    )
    body = np.sqrt(np.clip(1.0 - (rho / np.maximum(r_eff, 0.5)) ** 2, 0.0, 1.0))
    rim = smoothstep(-1.0, 1.0, r_eff - rho)
    return y0, x0, amp * np.maximum(body, 0.25 * rim) * rim, rho <= r_eff


def draw_lesions(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Nodules (6-26 mm), masses (30-70 mm) or calcified granulomas (2-6 mm, dense).

    Soft-tissue lesions add about the density of the lung air they displace (less for small
    nodules, which are thinner than the lung); calcified granulomas are denser than tissue.
    """
    prefix = "lung_lesion" if spec.kind != "granuloma" else "calcified_granuloma"
    inside = canvas.anatomy.lungs.sum(0) > 0.5
    typical_air = float(np.percentile(canvas.anatomy.air[inside], 75)) if inside.any() else 0.15
    for i in range(spec.count):
        side = spec.sides[i % len(spec.sides)] if len(spec.sides) else int(rng.integers(2))
        gy, gx = pick_point(canvas, side, spec.zone if i == 0 else "", rng)
        cy, cx = to_full(canvas, gy, gx)
        air = max(float(canvas.anatomy.air[int(gy), int(gx)]), 0.8 * typical_air)
        if spec.kind == "mass":
            diameter, amp, lobes = 30 + 40 * spec.severity, air * rng.uniform(0.8, 1.0), 0.12
        elif spec.kind == "granuloma":
            diameter, amp, lobes = rng.uniform(2.0, 6.0), rng.uniform(0.16, 0.3), 0.0
        else:
            diameter = 6 + 20 * spec.severity
            amp, lobes = air * rng.uniform(0.45, 0.8) * min(1.0, diameter / 12) ** 0.5, 0.05
        amp *= 0.5 + 0.5 * spec.conspicuity
        radius = max(canvas.mm(diameter / 2 * rng.uniform(0.85, 1.15)), 0.8)
        y0, x0, values, mask = _sphere(canvas, cy, cx, radius, amp, lobes, rng)
        name = prefix if spec.kind == "granuloma" else f"{prefix}_{i + 1}"  # granulomas: one mask
        add_patch(canvas, y0, x0, values, name, mask)


def _segment_patch(canvas: Canvas, p: tuple[float, float], q: tuple[float, float], half: float):
    """Distance-to-segment field around p-q (full-size coordinates): (y0, x0, distance)."""
    pad = int(np.ceil(half * 3 + 2))
    y0 = int(np.floor(min(p[0], q[0]))) - pad
    x0 = int(np.floor(min(p[1], q[1]))) - pad
    y1 = int(np.ceil(max(p[0], q[0]))) + pad
    x1 = int(np.ceil(max(p[1], q[1]))) + pad
    ys, xs = np.ogrid[y0:y1, x0:x1]
    d = np.asarray(q, float) - np.asarray(p, float)
    t = np.clip(((ys - p[0]) * d[0] + (xs - p[1]) * d[1]) / max(d @ d, 1e-6), 0.0, 1.0)
    dist = np.hypot(ys - (p[0] + t * d[0]), xs - (p[1] + t * d[1]))
    return y0, x0, dist


def draw_atelectasis(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Plate-like (discoid) atelectasis: a thin, slightly oblique band in the lower zone."""
    a = canvas.anatomy
    for side in spec.sides:
        gy, gx = pick_point(canvas, side, spec.zone or "lower", rng)
        x0, _, x1, _ = a.side_box(side)
        length = (x1 - x0) * canvas.scale * (0.2 + 0.25 * spec.severity) * rng.uniform(0.8, 1.2)
        angle = np.deg2rad(rng.uniform(-15, 15))
        cy, cx = to_full(canvas, gy, gx)
        dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
        half = canvas.mm(rng.uniform(1.5, 3.5) + 2 * spec.severity)
        y0, xq, dist = _segment_patch(canvas, (cy - dy, cx - dx), (cy + dy, cx + dx), half)
        amp = (0.06 + 0.08 * spec.conspicuity) * rng.uniform(0.85, 1.15)
        values = amp * np.exp(-((dist / half) ** 2))
        add_patch(canvas, y0, xq, values, f"atelectasis_{SIDE_NAMES[side]}", dist <= half)


def draw_kerley_lines(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Short horizontal septal lines at the lateral lung bases (interstitial edema)."""
    a = canvas.anatomy
    for side in (RIGHT, LEFT):
        x0, y0, x1, y1 = a.side_box(side)
        for _ in range(int(rng.integers(3, 9))):
            gy = rng.uniform(y0 + 0.65 * (y1 - y0), y0 + 0.92 * (y1 - y0))
            row = a.lungs[side][int(gy)]
            cols = np.flatnonzero(row > 0.5)
            if cols.size < 4:
                continue
            gx = cols[0] + 1 if side == RIGHT else cols[-1] - 1
            cy, cx = to_full(canvas, gy, gx)
            length = canvas.mm(rng.uniform(10, 20)) * (1 if side == RIGHT else -1)
            y0p, x0p, dist = _segment_patch(canvas, (cy, cx), (cy, cx + length), 1.0)
            add_patch(
                canvas, y0p, x0p, 0.05 * spec.conspicuity * np.exp(-((dist / canvas.mm(0.8)) ** 2))
            )


def draw_fracture(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """A lateral rib fracture: a lucent line across a posterior rib, often with callus."""
    a = canvas.anatomy
    side = spec.sides[0]
    phase = a.rib_phase
    frac = phase - np.floor(phase)
    x0, y0, x1, y1 = a.side_box(side)
    cols = np.arange(a.w)[None, :]
    lateral = cols < x0 + 0.35 * (x1 - x0) if side == RIGHT else cols > x1 - 0.35 * (x1 - x0)
    rows = np.arange(a.w)[:, None]
    ok = (a.lungs[side] > 0.5) & lateral & (np.abs(frac - a.rib_fill / 2) < 0.12 * a.rib_fill)
    ok &= (rows > y0 + 0.2 * (y1 - y0)) & (rows < y0 + 0.8 * (y1 - y0))
    flat = np.flatnonzero(ok)
    if flat.size == 0:
        flat = np.flatnonzero(a.lungs[side] > 0.5)
    index = int(flat[rng.integers(flat.size)])
    gy, gx = index // a.w, index % a.w
    period = 1.0 / max(
        abs(float(phase[min(gy + 1, a.w - 1), gx] - phase[max(gy - 1, 0), gx])) / 2, 1e-3
    )
    rib_width = a.rib_fill * period * canvas.scale
    cy, cx = to_full(canvas, gy, gx)
    tilt = np.deg2rad(rng.uniform(-20, 20))
    dy, dx = np.cos(tilt) * rib_width * 0.7, np.sin(tilt) * rib_width * 0.7
    y0p, x0p, dist = _segment_patch(canvas, (cy - dy, cx - dx), (cy + dy, cx + dx), 1.5)
    gap = -a.bone * (0.6 + 0.4 * spec.conspicuity) * np.exp(-((dist / canvas.mm(0.9)) ** 2))
    ys, xs = np.ogrid[y0p : y0p + dist.shape[0], x0p : x0p + dist.shape[1]]
    if rng.random() < 0.5:
        r = np.hypot(ys - cy, xs - cx) / max(rib_width * 0.75, 1.0)
        gap = gap + 0.6 * a.bone * np.exp(-(r**2)) * (dist > canvas.mm(1.0))
    mask = np.hypot(ys - cy, xs - cx) <= max(rib_width * 0.8, 2.0)
    add_patch(canvas, y0p, x0p, gap, f"fracture_{SIDE_NAMES[side]}", mask)
