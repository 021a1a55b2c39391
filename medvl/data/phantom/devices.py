"""Support devices and surgical hardware drawn at full resolution.

Devices follow the anatomy: a pacemaker generator sits below the left clavicle with leads
through the superior vena cava into the right heart; a central line enters from the right and
ends near the cavoatrial junction; an endotracheal tube runs down the trachea and ends above the
carina (a nasogastric tube continues into the stomach); sternotomy wires line the midline.
Widths are in millimetres; metal is denser than any tissue.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from medvl.data.phantom.anatomy import Anatomy
from medvl.data.phantom.draw import Canvas
from medvl.data.phantom.plan import FindingSpec
from medvl.data.phantom.stamps import add_patch, to_full, to_full_points


def catmull_rom(points, samples: int = 16) -> np.ndarray:
    """A smooth curve through every control point (Catmull-Rom spline), as (N, 2) points."""
    pts = np.asarray(points, float)
    padded = np.vstack([pts[0], pts, pts[-1]])
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]
    out = []
    for i in range(len(pts) - 1):
        p0, p1, p2, p3 = padded[i : i + 4]
        out.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3
            )
        )
    out.append(pts[-1:])
    return np.vstack(out)


def draw_shapes(canvas: Canvas, shapes, amp: float, name: str) -> None:
    """Rasterise PIL drawing calls on a full-size patch around ``shapes`` and add it.

    ``shapes`` is a list of (kind, points, width_px) with kind "line", "ellipse" or "box".
    """
    allpts = np.vstack([np.asarray(p, float).reshape(-1, 2) for _, p, _ in shapes])
    pad = int(max(w for _, _, w in shapes) * 2 + 4)
    y0, x0 = int(allpts[:, 0].min()) - pad, int(allpts[:, 1].min()) - pad
    y1, x1 = int(allpts[:, 0].max()) + pad, int(allpts[:, 1].max()) + pad
    img = Image.new("F", (x1 - x0, y1 - y0), 0.0)
    draw = ImageDraw.Draw(img)
    for kind, pts, width in shapes:
        xy = [(float(x - x0), float(y - y0)) for y, x in np.asarray(pts, float).reshape(-1, 2)]
        w = max(1, int(round(width)))
        if kind == "line":
            draw.line(xy, fill=1.0, width=w, joint="curve")
        elif kind == "ellipse":
            draw.ellipse(xy, outline=1.0, width=w)
        else:
            draw.rounded_rectangle(xy, radius=max(2, int(width * 3)), fill=1.0)
    values = gaussian_filter(np.asarray(img, np.float32), 0.7)
    add_patch(canvas, y0, x0, amp * values, name, values > 0.3)


def _landmarks(a: Anatomy) -> dict[str, tuple[float, float]]:
    """Grid positions (row, col) of the places devices run to."""
    top, bottom = a.lung_box[1], a.lung_box[3]
    h, tw, m = bottom - top, a.thorax_width, a.midline
    rows = np.nonzero((a.heart > 0.5).any(1))[0]
    cols = np.nonzero((a.heart > 0.5).any(0))[0]
    return {
        "notch": (top - 0.02 * a.w, m),
        "svc": (top + 0.3 * h, m - 0.06 * tw),
        "cavoatrial": (top + 0.45 * h, m - 0.06 * tw),
        "carina": (top + 0.33 * h, m),
        "ra": (rows.mean(), cols[0] + 0.2 * (cols[-1] - cols[0])),
        "rv": (rows[-1] - 0.15 * (rows[-1] - rows[0]), cols[0] + 0.7 * (cols[-1] - cols[0])),
        "left_infraclavicular": (top + 0.08 * h, m + 0.33 * tw),
        "right_subclavian": (top + 0.02 * h, m - 0.3 * tw),
        "stomach": (bottom + 0.06 * a.w, m + 0.22 * tw),
    }


def draw_devices(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """One support device of ``spec.kind``: pacemaker, line, tube or stent."""
    a = canvas.anatomy
    marks = _landmarks(a)
    amp = 0.35 + 0.25 * spec.conspicuity
    if spec.kind == "pacemaker":
        gy, gx = marks["left_infraclavicular"]
        cy, cx = to_full(canvas, gy + rng.normal(0, 0.01 * a.w), gx + rng.normal(0, 0.01 * a.w))
        hw, hh = canvas.mm(rng.uniform(20, 26)), canvas.mm(rng.uniform(18, 24))
        box = [(cy - hh, cx - hw), (cy + hh, cx + hw)]
        leads = [
            (
                "line",
                catmull_rom(
                    to_full_points(canvas, [(gy, gx - 0.04 * a.w), marks["svc"], marks["ra"]])
                ),
                canvas.mm(2),
            )
        ]
        if rng.random() < 0.7:
            path = [(gy, gx - 0.04 * a.w), marks["svc"], marks["ra"], marks["rv"]]
            leads.append(("line", catmull_rom(to_full_points(canvas, path)), canvas.mm(2)))
        leads[0] = ("line", np.vstack([[cy, cx - hw], leads[0][1]]), leads[0][2])
        draw_shapes(
            canvas, [("box", box, canvas.mm(3)), *leads], amp * 1.4, "support_devices_pacemaker"
        )
    elif spec.kind == "tube":
        start = (0.0, a.midline + rng.normal(0, 0.005 * a.w))
        tip = (marks["carina"][0] - rng.uniform(0.03, 0.08) * a.w, a.midline)
        shapes = [("line", to_full_points(canvas, [start, tip]), canvas.mm(2.5))]
        if rng.random() < 0.5:
            path = [
                start,
                (marks["carina"][0], a.midline + 0.02 * a.w),
                (a.lung_box[3], a.midline + 0.05 * a.w),
                marks["stomach"],
            ]
            shapes.append(("line", catmull_rom(to_full_points(canvas, path)), canvas.mm(2)))
        draw_shapes(canvas, shapes, amp * 0.7, "support_devices_tube")
    elif spec.kind == "stent":
        cy, cx = to_full(canvas, *marks["svc"])
        length, half = canvas.mm(rng.uniform(25, 40)), canvas.mm(5)
        ys = np.linspace(cy - length / 2, cy + length / 2, 7)
        zig = [[(y, cx - half), (y + length / 14, cx + half)] for y in ys]
        shapes = [("line", np.asarray(z), 1.0) for z in zig]
        shapes += [
            (
                "line",
                np.asarray([(cy - length / 2, cx + s * half), (cy + length / 2, cx + s * half)]),
                1.0,
            )
            for s in (-1, 1)
        ]
        draw_shapes(canvas, shapes, amp, "support_devices_stent")
    else:
        side_start = (
            marks["right_subclavian"]
            if rng.random() < 0.6
            else (0.0, a.midline - 0.1 * a.thorax_width)
        )
        path = [side_start, marks["svc"], marks["cavoatrial"]]
        path[-1] = (path[-1][0] + rng.normal(0, 0.02 * a.w), path[-1][1])
        draw_shapes(
            canvas,
            [("line", catmull_rom(to_full_points(canvas, path)), canvas.mm(1.8))],
            amp * 0.8,
            "support_devices_line",
        )


def draw_hardware(canvas: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Sternotomy wires along the midline, or a scatter of surgical clips (not CheXpert devices)."""
    a = canvas.anatomy
    top, bottom = a.lung_box[1], a.lung_box[3]
    shapes = []
    if spec.kind == "wires":
        for gy in np.linspace(
            top + 0.15 * (bottom - top), top + 0.6 * (bottom - top), int(rng.integers(5, 8))
        ):
            cy, cx = to_full(canvas, gy, a.midline + rng.normal(0, 0.004 * a.w))
            rx, ry = canvas.mm(rng.uniform(5, 8)), canvas.mm(rng.uniform(2.5, 4))
            shapes.append(("ellipse", [(cy - ry, cx - rx), (cy + ry, cx + rx)], canvas.mm(1.2)))
            shapes.append(
                (
                    "line",
                    [(cy, cx + rx), (cy + canvas.mm(4), cx + rx + canvas.mm(3))],
                    canvas.mm(1.2),
                )
            )
    else:
        cy0, cx0 = to_full(canvas, top + 0.4 * (bottom - top), a.midline)
        spread = canvas.mm(35)
        for _ in range(int(rng.integers(3, 8))):
            cy, cx = cy0 + rng.normal(0, spread), cx0 + rng.normal(0, spread)
            ang = rng.uniform(0, np.pi)
            d = canvas.mm(rng.uniform(2.5, 4))
            tip = (cy + d * np.sin(ang), cx + d * np.cos(ang))
            other = (cy + d * np.sin(ang + 0.5), cx + d * np.cos(ang + 0.5))
            shapes.append(("line", [tip, (cy, cx), other], canvas.mm(1.0)))
    draw_shapes(canvas, shapes, 0.45 + 0.2 * spec.conspicuity, f"surgical_hardware_{spec.kind}")
