"""Normal frontal chest anatomy for phantom radiographs, as a density map on a working grid.

A frontal phantom starts from one real lung annotation (see ``phantom_shapes``) warped into the
frame with a random box, tilt and per-side height. Everything else is drawn around it: each
hemithorax is closed medially down to a smooth diaphragm, the mediastinum (with aortic knob) and
a rotated-ellipse heart of a chosen cardiothoracic ratio are cut out of it, and soft tissue,
shoulders, spine, trachea, hila, ribs and clavicles are added. Density is display-positive (bone
and soft tissue high, air low). Smooth structures live on a small grid (``w`` pixels, default
256) that is upsampled later; fine detail (vessels, nodules, devices, noise) is drawn at full size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from medvl.data.phantom.shapes import LungBank

RIGHT, LEFT = 0, 1  # patient sides; the patient's right lung is on the image left (PA view)


def resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float image (PIL; antialiased when shrinking)."""
    if a.shape == shape:
        return np.asarray(a, dtype=np.float32)
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.array(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def warp_box(
    template: np.ndarray, size: int, box: tuple[float, float, float, float], angle: float = 0.0
) -> np.ndarray:
    """Warp a square template onto ``box`` = (x0, y0, x1, y1) of a ``size`` x ``size`` grid.

    ``angle`` (radians) tilts the template about the box centre; bilinear, zero outside.
    """
    x0, y0, x1, y1 = box
    t = template.shape[0]
    cx, cy, sx, sy = (x0 + x1) / 2, (y0 + y1) / 2, t / (x1 - x0), t / (y1 - y0)
    c, s = np.cos(angle), np.sin(angle)
    data = (
        c * sx,
        s * sx,
        t / 2 - sx * (c * cx + s * cy),
        -s * sy,
        c * sy,
        t / 2 - sy * (c * cy - s * cx),
    )
    img = Image.fromarray(np.ascontiguousarray(template, dtype=np.float32))
    out = img.transform((size, size), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    return np.array(out)


def blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide kernels (sigma >= 3 px) run on a 2x or 4x smaller copy."""
    factor = 4 if sigma >= 8 else 2 if sigma >= 3 else 1
    if factor == 1:
        return gaussian_filter(field, sigma)
    h, w = field.shape
    small = resize(field, (h // factor, w // factor))
    return resize(gaussian_filter(small, sigma / factor), (h, w))


@lru_cache(maxsize=8)
def grid_axes(w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of a ``w`` x ``w`` grid as broadcastable float32 axes."""
    ys, xs = np.ogrid[:w, :w]
    return ys.astype(np.float32), xs.astype(np.float32)


def smoothstep(edge0: float, edge1, x) -> np.ndarray:
    """Hermite ramp from 0 at ``edge0`` to 1 at ``edge1`` (either order; arrays broadcast)."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class AnatomyOptions:
    """What the findings plan asks of the anatomy before it is drawn."""

    ctr: float = 0.45
    volume_loss: tuple[float, float] = (0.0, 0.0)  # fractional lung-height loss per side (<0: gain)
    mediastinal_widening: float = 0.0  # extra upper-mediastinal half-width, x thorax width


@dataclass
class Anatomy:
    """A frontal phantom's anatomy on a ``w`` x ``w`` grid (coordinates in grid pixels)."""

    w: int
    midline: float
    thorax_width: float
    lung_box: tuple[float, float, float, float]  # (x0, y0, x1, y1) around both hemithoraces
    hemithorax: np.ndarray  # (2, w, w) coverage of each pleural space
    lungs: np.ndarray  # (2, w, w) aerated lung: hemithorax minus heart and mediastinum
    heart: np.ndarray  # (w, w) coverage
    dome_row: tuple[float, float]  # top of each hemidiaphragm
    base_row: tuple[float, float]  # lowest row of each costophrenic recess
    density: np.ndarray  # (w, w) display-positive density, no pathology yet
    air: np.ndarray  # (w, w) density the aerated lung removed: what fluid or pus puts back
    rib_phase: np.ndarray  # (w, w) posterior rib coordinate: integer part = rib index
    rib_fill: float  # fraction of each rib period covered by bone
    bone: float  # rib density amplitude
    mediastinal_half: float
    ctr: float
    template: int

    def side_box(self, side: int) -> tuple[int, int, int, int]:
        """Bounding box (x0, y0, x1, y1) of one hemithorax, in grid pixels."""
        m = self.hemithorax[side] > 0.5
        rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _dome(lung: np.ndarray, side: int) -> tuple[int, float]:
    """Column and row of a hemidiaphragm's dome: the highest lung base in the lateral half.

    The medial half is left out because real annotations stop at the real heart there.
    """
    w = lung.shape[1]
    binary = lung > 0.5
    bottoms = np.where(binary.any(0), w - 1 - np.argmax(binary[::-1], axis=0), -1)
    present = np.nonzero(bottoms >= 0)[0]
    half = present[: len(present) // 2] if side == RIGHT else present[len(present) // 2 :]
    col = int(half[np.argmin(bottoms[half])])
    return col, float(bottoms[col])


def _close_medially(
    lung: np.ndarray, side: int, midline: float, floor: float, top: float, height: float
) -> np.ndarray:
    """Extend a lung's lower part to the midline, above a diaphragm from its dome to ``floor``.

    Real annotations stop at the real heart; the phantom draws its own heart, so the pleural
    space is closed first and the new heart is cut out of it afterwards. The apex keeps its
    real medial border: the closure ramps in from the upper third down.
    """
    h, w = lung.shape
    binary = lung > 0.5
    dome_col, dome = _dome(lung, side)
    cols, rows = np.arange(w)[None, :], np.arange(h)[:, None]
    has = binary.any(1)[:, None]
    if side == RIGHT:
        edge = np.where(has, w - 1 - np.argmax(binary[:, ::-1], axis=1)[:, None], w)
        lateral = np.maximum.accumulate(binary, axis=1)
        t = np.clip((cols - dome_col) / max(midline - dome_col, 1.0), 0.0, 1.0)
        medial = (cols > dome_col) & (cols < midline)
    else:
        edge = np.where(has, np.argmax(binary, axis=1)[:, None], -1)
        lateral = np.maximum.accumulate(binary[:, ::-1], axis=1)[:, ::-1]
        t = np.clip((dome_col - cols) / max(dome_col - midline, 1.0), 0.0, 1.0)
        medial = (cols < dome_col) & (cols >= midline)
    ramp = smoothstep(top + 0.15 * height, top + 0.4 * height, rows)
    reach = edge + (midline - edge) * ramp
    inside = (cols <= reach) if side == RIGHT else (cols >= reach)
    diaphragm = dome + (max(floor, dome) - dome) * t**2
    below = rows > diaphragm
    fill = ((lateral & inside) | (~has & (rows >= dome))) & medial & ~below
    return np.where(medial & below, 0.0, np.maximum(lung, fill)).astype(np.float32)


def _heart(w: int, midline: float, width: float, floor: np.ndarray, shape: tuple) -> np.ndarray:
    """A tilted ellipse of the given width (grid px) whose lower part sinks into the diaphragm.

    The widest row stays above the diaphragm (``floor``, one row per column) at both heart
    borders, so the drawn cardiothoracic ratio is the ellipse's.
    """
    ratio, tilt, left_share = shape
    c, s = float(np.cos(tilt)), float(np.sin(tilt))
    b = (width / 2) / np.sqrt((ratio * c) ** 2 + s**2)
    a = ratio * b
    half_h = np.sqrt((a * s) ** 2 + (b * c) ** 2)
    cx = midline + width * (left_share - 0.5)
    cols = np.clip(np.arange(int(cx - width / 2) - 1, int(cx + width / 2) + 2), 0, w - 1)
    bottom = float(floor[cols].max())
    cy = min(bottom - 0.45 * half_h, float(floor[cols].min()) - 0.2 * half_h)
    ys, xs = grid_axes(w)
    dx, dy = xs - cx, ys - cy
    r = np.sqrt(((dx * c + dy * s) / a) ** 2 + ((-dx * s + dy * c) / b) ** 2)
    heart = np.clip((1.0 - r) * b / 1.2 + 0.5, 0.0, 1.0)
    heart *= smoothstep(floor + 1.0, floor - 1.0, ys)
    return heart.astype(np.float32)


def _measured_ctr(heart: np.ndarray, tw: float) -> float:
    """Cardiothoracic ratio as a reader measures it: widest heart extent / thoracic width."""
    cols = np.nonzero((heart > 0.5).any(0))[0]
    return float(cols[-1] - cols[0] + 1) / tw if cols.size else 0.0


def _rib_profile(phase: np.ndarray, fill: float) -> np.ndarray:
    """Cross-section of a rib: tubular bone with brighter cortical edges."""
    t = phase - np.floor(phase)
    tn = np.clip(t / fill, 0.0, 1.0)
    body = np.sqrt(np.clip(1.0 - (2.0 * tn - 1.0) ** 2, 0.0, 1.0))
    cortex = np.exp(-((tn / 0.14) ** 2)) + np.exp(-(((1.0 - tn) / 0.14) ** 2))
    return np.where(t < fill, 0.5 * body + 0.5 * cortex, 0.0).astype(np.float32)


def _ribs(w, midline, tw, top, height, rng) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior ribs (arching up from the spine, falling laterally) and fainter anterior ribs.

    Drawn inside the rib cage's box only (zero elsewhere); returns (ribs, phase, bone fill).
    """
    box, ys, xs = _local(w, top + height / 2, midline, 0.56 * height + 0.06 * w, 0.56 * tw)
    ribs, phase = np.zeros((w, w), np.float32), np.zeros((w, w), np.float32)
    xn = np.abs(xs - midline) / (tw / 2)
    curve = rng.uniform(0.3, 0.4)
    post = (ys - top + 0.04 * height - height * (curve * xn**2 - 0.12 * xn)) / height
    phase_box = np.sign(post) * np.abs(post) ** 0.8 * rng.uniform(8.8, 9.8)
    fill = rng.uniform(0.42, 0.5)
    posterior = _rib_profile(phase_box, fill) * smoothstep(0.1, 0.35, xn)
    ant = (ys - top - 0.05 * height - 0.22 * height * np.clip(1.0 - xn, 0.0, 1.0) ** 1.4) / height
    anterior = _rib_profile(np.abs(ant) ** 0.9 * 6.0, 0.3) * smoothstep(0.35, 0.7, xn)
    ribs[box], phase[box] = posterior + 0.35 * anterior, phase_box
    return ribs, phase, fill


def _clavicle(w: int, midline: float, tw: float, top: float, side: int, rng) -> np.ndarray:
    """One clavicle: a gently S-curved band from the sternal notch out over the lung apex."""
    ys, xs = grid_axes(w)
    sign = -1.0 if side == RIGHT else 1.0
    x_med, x_lat = midline + sign * 0.025 * w, midline + sign * (tw / 2 + 0.05 * w)
    y_med, y_lat = top + rng.uniform(0.05, 0.08) * w, top - rng.uniform(0.0, 0.03) * w
    t = (xs - x_med) / (x_lat - x_med)
    centre = y_med + (y_lat - y_med) * np.clip(t, 0, 1) + 0.006 * w * np.sin(2 * np.pi * t)
    half = 0.016 * w * (1.2 - 0.3 * np.clip(t, 0.0, 1.0))
    along = smoothstep(-0.04, 0.0, t) * smoothstep(1.04, 0.98, t)
    cross = np.clip(1.0 - (np.abs(ys - centre) / half) ** 2, 0.0, 1.0)
    return (np.sqrt(cross) * 0.6 + 0.4 * (cross > 0) * (1 - cross)) * along


def build_frontal(
    rng: np.random.Generator, w: int, bank: LungBank, options: AnatomyOptions
) -> Anatomy:
    """Sample and draw a normal frontal chest on a ``w`` x ``w`` grid, shaped by ``options``."""
    index = int(rng.integers(len(bank)))
    width = rng.uniform(0.72, 0.82) * w
    height = min(width * bank.aspect[index] * rng.uniform(0.92, 1.08), 0.8 * w)
    x0 = (w - width) / 2 + rng.normal(0, 0.012 * w)
    y0 = rng.uniform(0.08, 0.14) * w
    angle = np.deg2rad(rng.normal(0, 1.5))
    hemis = []
    for side in (RIGHT, LEFT):
        box = (x0, y0, x0 + width, y0 + height * (1.0 - options.volume_loss[side]))
        hemis.append(warp_box(bank.masks[index, side] / 255.0, w, box, angle))
    binary = [h > 0.5 for h in hemis]
    r_cols, l_cols = np.nonzero(binary[RIGHT].any(0))[0], np.nonzero(binary[LEFT].any(0))[0]
    tw = float(l_cols[-1] - r_cols[0] + 1)
    midline = (r_cols[-1] + l_cols[0]) / 2.0
    rows = np.nonzero((binary[RIGHT] | binary[LEFT]).any(1))[0]
    top, bottom = float(rows[0]), float(rows[-1])
    bases = [float(np.nonzero(binary[side].any(1))[0][-1]) for side in (RIGHT, LEFT)]
    domes = [_dome(hemis[side], side)[1] for side in (RIGHT, LEFT)]
    heart_bottom = min(max(domes) + rng.uniform(0.02, 0.06) * (bottom - top), max(bases))
    for side in (RIGHT, LEFT):
        hemis[side] = _close_medially(hemis[side], side, midline, heart_bottom, top, bottom - top)

    hemithorax = np.stack(hemis).astype(np.float32)
    floor = _diaphragm(hemithorax, heart_bottom)
    ys, xs = grid_axes(w)
    heart_shape = (rng.uniform(1.15, 1.35), np.deg2rad(rng.uniform(25, 38)), rng.uniform(0.62, 0.7))
    width, best = options.ctr * tw, None
    for _ in range(8):  # the diaphragm hides part of the heart: refit until the CTR is on target
        heart = _heart(w, midline, width, floor, heart_shape)
        ctr = _measured_ctr(heart, tw)
        if best is None or abs(ctr - options.ctr) < abs(best[1] - options.ctr):
            best = (heart, ctr)
        if abs(ctr - options.ctr) * tw < 1.0:
            break
        width *= (options.ctr / max(ctr, 1e-3)) ** 1.5
    heart, ctr = best

    heart_top = float(np.nonzero((heart > 0.5).any(1))[0][0])
    med_half = tw * (rng.uniform(0.08, 0.1) + options.mediastinal_widening)
    knob_y = top + rng.uniform(0.2, 0.27) * (bottom - top)
    knob = 0.035 * w * np.exp(-(((ys - knob_y) / (0.035 * w)) ** 2))
    right_edge, left_edge = midline - 0.9 * med_half, midline + med_half + knob
    mediastinum = smoothstep(right_edge - 1, right_edge + 1, xs) * smoothstep(
        left_edge + 1, left_edge - 1, xs
    )
    mediastinum = mediastinum * smoothstep(heart_top + 0.08 * w, heart_top + 0.02 * w, ys)
    lungs = np.stack([h * (1.0 - heart) * (1.0 - mediastinum) for h in hemis]).astype(np.float32)

    density, air = _soft_tissue(rng, w, midline, tw, top, bottom, floor, lungs, heart, med_half)
    ribs, phase, fill = _ribs(w, midline, tw, top, bottom - top, rng)
    cage = np.clip(blur(lungs.sum(0), 0.015 * w) * 1.6, 0.0, 1.0)
    bone = rng.uniform(0.05, 0.075)
    density += bone * ribs * cage
    clavicles = sum(_clavicle(w, midline, tw, top, side, rng) for side in (RIGHT, LEFT))
    density += 1.5 * bone * clavicles
    return Anatomy(
        w=w,
        midline=midline,
        thorax_width=tw,
        lung_box=(float(r_cols[0]), top, float(l_cols[-1] + 1), bottom + 1),
        hemithorax=hemithorax,
        lungs=lungs,
        heart=heart,
        dome_row=(domes[0], domes[1]),
        base_row=(bases[0], bases[1]),
        density=density.astype(np.float32),
        air=air,
        rib_phase=phase,
        rib_fill=fill,
        bone=bone,
        mediastinal_half=med_half,
        ctr=ctr,
        template=index,
    )


def _diaphragm(hemithorax: np.ndarray, heart_bottom: float) -> np.ndarray:
    """Row of the diaphragm under every column: the floor of the pleural spaces, or the heart.

    Columns beside the thorax take the value of the nearest thorax column; a light blur hides
    the pixel steps.
    """
    w = hemithorax.shape[-1]
    thorax = hemithorax.max(0) > 0.5
    floor = (w - 1 - np.argmax(thorax[::-1], axis=0)).astype(np.float32)
    floor[~thorax.any(0)] = heart_bottom
    cols = np.nonzero(thorax.any(0))[0]
    floor[: cols[0]], floor[cols[-1] + 1 :] = floor[cols[0]], floor[cols[-1]]
    return gaussian_filter(floor, 0.015 * w)


def _local(w: int, cy: float, cx: float, ry: float, rx: float):
    """A box around (cy, cx) clipped to the grid: (slices, row axis, column axis)."""
    y0, y1 = max(int(cy - ry) - 1, 0), min(int(cy + ry) + 2, w)
    x0, x1 = max(int(cx - rx) - 1, 0), min(int(cx + rx) + 2, w)
    y0, x0 = min(y0, y1), min(x0, x1)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    return np.s_[y0:y1, x0:x1], ys, xs


def _soft_tissue(rng, w, midline, tw, top, bottom, floor, lungs, heart, med_half) -> np.ndarray:
    """Body wall, shoulders, mediastinum, spine, trachea, hila, abdomen and lung air.

    Values are rough line integrals in arbitrary units: the lateral wall is a thin shell, the
    dense centre (spine, great vessels, heart) and the abdomen below the diaphragm are thick.
    """
    ys, xs = grid_axes(w)
    height = bottom - top
    dx = np.abs(xs - midline)
    half = tw / 2 + rng.uniform(0.05, 0.08) * w + 0.03 * w * smoothstep(top, bottom, ys)
    neck = rng.uniform(0.075, 0.095) * w
    shoulder_line = top - 0.12 * w + rng.uniform(0.25, 0.35) * np.clip(dx - neck, 0.0, None)
    present = smoothstep(shoulder_line - 0.01 * w, shoulder_line + 0.015 * w, ys)
    shell = np.sqrt(np.clip(1.0 - (dx / half) ** 2, 0.0, 1.0))
    core = np.exp(-((dx / (0.15 * tw)) ** 4))
    tissue = (0.24 * shell + 0.06 * smoothstep(1.03, 0.97, dx / half) + 0.2 * core) * present
    arm_gap = half + rng.uniform(0.015, 0.04) * w
    arms = 0.24 * smoothstep(arm_gap, arm_gap + 0.025 * w, dx) * present
    arms = arms * smoothstep(top + rng.uniform(0.05, 0.3) * height, top - 0.05 * w, ys)
    thickness = heart * np.clip(blur(heart, 0.03 * w) * 1.5, 0.0, 1.0)
    density = np.maximum(tissue, arms) + 0.07 * thickness * (1.0 - 0.5 * core)
    for sign in (-1.0, 1.0):  # humeral heads
        hx, hy = midline + sign * (tw / 2 + 0.085 * w), top - 0.01 * w
        box, ly, lx = _local(w, hy, hx, 0.065 * w, 0.065 * w)
        r = np.hypot(lx - hx, ly - hy) / (0.065 * w)
        density[box] += 0.14 * np.sqrt(np.clip(1.0 - r**2, 0.0, 1.0))
    inside_body = smoothstep(1.03, 0.97, dx / half) * present
    beside = smoothstep(0.56 * tw, 0.42 * tw, dx)  # no diaphragm edge lateral to the lungs
    abdomen = smoothstep(floor - 0.025 * w, floor + 0.005 * w, ys) * inside_body * beside
    density = density * (1.0 - abdomen) + abdomen * (0.36 * shell + 0.1 + 0.07 * core)
    spine_half = 0.05 * tw
    level = (ys - top) / (0.075 * height)
    endplate = 1.0 - 0.3 * np.cos(np.pi * (level - np.floor(level))) ** 8
    density += 0.03 * smoothstep(spine_half + 1.0, spine_half - 1.0, dx) * endplate * present
    carina = top + 0.33 * height
    trachea = smoothstep(0.02 * w, 0.013 * w, np.abs(xs - midline - 0.004 * (ys - top)))
    density -= 0.06 * trachea * smoothstep(carina + 0.01 * w, carina - 0.01 * w, ys) * present
    small = max(16, w // 4)
    blurred = resize(gaussian_filter(resize(lungs.sum(0), (small, small)), small / 28.0), (w, w))
    depth = np.clip(2.0 * blurred - 0.9, 0.0, 1.0)
    air = lungs.sum(0) * (0.04 + 0.14 * depth) * rng.uniform(0.9, 1.1)
    density -= air
    for sign in (-1.0, 1.0):  # hila
        hx, hy = midline + sign * (med_half + 0.03 * w), top + 0.45 * height
        box, ly, lx = _local(w, hy, hx, 0.18 * w, 0.09 * w)
        density[box] += 0.05 * np.exp(
            -(((lx - hx) / (0.03 * w)) ** 2 + ((ly - hy) / (0.06 * w)) ** 2)
        )
    if rng.random() < 0.7:  # gastric bubble
        gas_x = midline + 0.22 * tw
        gas_y = floor[int(np.clip(gas_x, 0, w - 1))] + 0.04 * w
        box, ly, lx = _local(w, gas_y, gas_x, 0.03 * w, 0.05 * w)
        gas = np.clip(1.0 - np.hypot((lx - gas_x) / 1.6, ly - gas_y) / (0.03 * w), 0.0, 1.0)
        density[box] -= 0.12 * np.sqrt(gas)
    return density.astype(np.float32), air.astype(np.float32)
