"""Lateral phantom radiographs: simpler than the frontal view, built the same way.

The lung silhouette is one real lung annotation (its convex lateral border becomes the
posterior border); around it sit the spine, sternum, trachea, raised arms, a heart in the
anterior-inferior chest and both hemidiaphragms. The patient faces image right (IU's usual
orientation, PatientOrientation A\\F) unless mirrored. Findings a lateral film shows reliably
are drawn: heart size, posterior costophrenic fluid, lesions, airspace disease, edema haze and
devices; pneumothorax, rib fractures, pleural thickening, plate atelectasis and mediastinal
widening are left to the frontal view (the truth file lists what each image shows).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.ndimage import gaussian_filter, maximum_filter1d

from medvl.data.phantom import draw as draw
from medvl.data.phantom import stamps as stamps
from medvl.data.phantom.anatomy import Anatomy, grid_axes, resize, smoothstep, warp_box
from medvl.data.phantom.devices import catmull_rom, draw_shapes
from medvl.data.phantom.plan import FindingSpec, PhantomPlan
from medvl.data.phantom.render import (
    GRID,
    Banks,
    Rendered,
    add_side_marker,
    compose,
    full_masks,
)
from medvl.findings import (
    CARDIOMEGALY,
    CONSOLIDATION,
    EDEMA,
    LUNG_LESION,
    LUNG_OPACITY,
    PLEURAL_EFFUSION,
    PNEUMONIA,
    SUPPORT_DEVICES,
)

LATERAL_FINDINGS = (
    CARDIOMEGALY,
    PLEURAL_EFFUSION,
    LUNG_LESION,
    CONSOLIDATION,
    PNEUMONIA,
    LUNG_OPACITY,
    EDEMA,
    SUPPORT_DEVICES,
)


def build_lateral(rng: np.random.Generator, w: int, banks: Banks, ctr: float) -> Anatomy:
    """Normal lateral chest (facing image right) with a heart scaled to the frontal CTR."""
    index = int(rng.integers(len(banks.lungs)))
    ys, xs = grid_axes(w)
    back, front = rng.uniform(0.08, 0.14) * w, rng.uniform(0.84, 0.9) * w
    top, bottom = rng.uniform(0.08, 0.13) * w, rng.uniform(0.74, 0.82) * w
    box = (back + 0.05 * w, top, front - 0.04 * w, bottom)
    template = banks.lungs.masks[index, 0]
    cols = np.nonzero(template.max(0) > 127)[0]
    template = resize(template[:, cols[0] : cols[-1] + 1] / 255.0, template.shape)
    lung = warp_box(template, w, box, np.deg2rad(rng.normal(0, 2)))
    height, depth = bottom - top, box[2] - box[0]
    inside = lung > 0.5
    present = np.nonzero(inside.any(0))[0]
    floor = np.where(inside.any(0), w - 1 - np.argmax(inside[::-1], axis=0), 0).astype(np.float32)
    floor = maximum_filter1d(floor, int(0.16 * w))  # the diaphragm, without rounded corners
    floor[: present[0]], floor[present[-1] + 1 :] = floor[present[0]], floor[present[-1]]
    floor = gaussian_filter(floor, 0.01 * w)
    heart_w = depth * np.clip(0.42 * ctr / 0.45, 0.3, 0.7)
    cx, cy = box[2] - 0.45 * heart_w, bottom - 0.2 * height
    r = np.hypot((xs - cx) / (heart_w / 2), (ys - cy) / (0.42 * height))
    heart = np.clip((1.0 - r) * heart_w / 3.0 + 0.5, 0.0, 1.0) * smoothstep(
        floor + 1, floor - 1, ys
    )
    lungs = (lung * (1.0 - 0.8 * heart)).astype(np.float32)
    body = smoothstep(back - 0.01 * w, back + 0.01 * w, xs)
    body = body * smoothstep(front + 0.01 * w, front - 0.01 * w, xs)
    profile = np.sin(np.pi * np.clip((xs - back) / (front - back), 0, 1))
    density = (0.36 + 0.06 * profile) * body
    density = density + 0.12 * smoothstep(floor - 2, floor + 3, ys) * body
    level = (ys - top) / (0.075 * height)
    spine_x = back + 0.12 * w + 0.03 * w * ((ys - top) / height - 0.5) ** 2
    vertebra = smoothstep(0.05 * w, 0.038 * w, np.abs(xs - spine_x))
    endplates = 1.0 - 0.25 * np.cos(np.pi * (level - np.floor(level))) ** 10
    density += 0.06 * vertebra * endplates
    sternum = smoothstep(0.008 * w, 0.004 * w, np.abs(xs - (front - 0.025 * w)))
    density += 0.08 * sternum * (ys > top) * (ys < cy)
    trachea_x = 0.55 * box[0] + 0.45 * box[2] + 0.04 * w * (ys - top) / height
    trachea = smoothstep(0.018 * w, 0.011 * w, np.abs(xs - trachea_x))
    density -= 0.035 * trachea * smoothstep(top + 0.35 * height, top + 0.25 * height, ys)
    small = max(16, w // 4)
    blurred = resize(gaussian_filter(resize(lungs, (small, small)), small / 24.0), (w, w))
    air = lungs * (0.03 + 0.12 * np.clip(2.0 * blurred - 0.8, 0.0, 1.0))
    density = density - air + 0.05 * heart
    pair = np.stack([lung, lung]).astype(np.float32)
    cols = np.nonzero((lung > 0.5).any(0))[0]
    base = float(np.nonzero((lung > 0.5).any(1))[0][-1])
    return Anatomy(
        w=w,
        midline=float(0.5 * (box[0] + box[2])),
        thorax_width=float(depth),
        lung_box=(float(cols[0]), top, float(cols[-1] + 1), bottom),
        hemithorax=pair,
        lungs=np.stack([lungs, lungs]),
        heart=heart.astype(np.float32),
        dome_row=(base, base),
        base_row=(base, base),
        density=density.astype(np.float32),
        air=air.astype(np.float32),
        rib_phase=np.zeros((w, w), np.float32),
        rib_fill=0.45,
        bone=0.06,
        mediastinal_half=0.02 * w,
        ctr=float(heart_w / depth),
        template=index,
    )


def _effusion(canvas: draw.Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Fluid in the posterior costophrenic sulcus, rising posteriorly (patient facing right)."""
    a = canvas.anatomy
    ys, xs = grid_axes(a.w)
    x0, y0, x1, y1 = a.side_box(0)
    depth = (y1 - y0) * (0.05 + 0.35 * spec.severity**1.3) * len(spec.sides) ** 0.3
    posterior = np.clip((x1 - xs) / (x1 - x0), 0.0, 1.0)
    meniscus = a.base_row[0] - depth * (0.4 + 0.6 * posterior**1.5)
    fluid = a.lungs[0] * smoothstep(meniscus - 0.02 * a.w, meniscus + 0.01 * a.w, ys)
    canvas.density += fluid * (a.air + 0.03 * spec.conspicuity)
    canvas.vessel_gain *= 1.0 - fluid
    canvas.add_mask("pleural_effusion", (a.lungs[0] * (ys >= meniscus) > 0.5).astype(np.float32))


def _devices(canvas: draw.Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Devices in profile: generator anterior-superior with leads to the heart, lines, tubes."""
    a = canvas.anatomy
    x0, top, x1, bottom = a.lung_box
    heart_rows, heart_cols = (
        np.nonzero((a.heart > 0.5).any(1))[0],
        np.nonzero((a.heart > 0.5).any(0))[0],
    )
    heart = (heart_rows.mean(), heart_cols.mean())
    svc = (top + 0.3 * (bottom - top), 0.45 * x0 + 0.55 * x1)
    amp = 0.3 + 0.2 * spec.conspicuity
    if spec.kind == "pacemaker":
        gy, gx = top + 0.05 * (bottom - top), x1 + 0.02 * a.w
        cy, cx = stamps.to_full(canvas, gy, gx)
        hw, hh = canvas.mm(8), canvas.mm(22)
        path = catmull_rom(stamps.to_full_points(canvas, [(gy, gx), svc, heart]))
        draw_shapes(
            canvas,
            [
                ("box", [(cy - hh, cx - hw), (cy + hh, cx + hw)], canvas.mm(3)),
                ("line", path, canvas.mm(2)),
            ],
            amp * 1.4,
            "support_devices_pacemaker",
        )
    elif spec.kind == "tube":
        path = stamps.to_full_points(
            canvas,
            [
                (0.0, 0.55 * x0 + 0.45 * x1),
                (top + 0.28 * (bottom - top), 0.55 * x0 + 0.45 * x1 + 0.03 * a.w),
            ],
        )
        draw_shapes(canvas, [("line", path, canvas.mm(2.5))], amp * 0.7, "support_devices_tube")
    else:
        path = catmull_rom(
            stamps.to_full_points(
                canvas,
                [
                    (top - 0.05 * a.w, 0.5 * (x0 + x1)),
                    svc,
                    (svc[0] + 0.12 * (bottom - top), svc[1]),
                ],
            )
        )
        draw_shapes(canvas, [("line", path, canvas.mm(1.8))], amp * 0.8, "support_devices_line")


def _wires(canvas: draw.Canvas, rng: np.random.Generator) -> None:
    """Sternotomy wires seen edge-on: short dense bars along the sternum."""
    a = canvas.anatomy
    _, top, x1, bottom = a.lung_box
    shapes = []
    for gy in np.linspace(
        top + 0.15 * (bottom - top), top + 0.6 * (bottom - top), int(rng.integers(5, 8))
    ):
        cy, cx = stamps.to_full(canvas, gy, x1 + 0.035 * a.w)
        shapes.append(
            (
                "line",
                [
                    (cy - canvas.mm(1.5), cx - canvas.mm(5)),
                    (cy + canvas.mm(1.5), cx + canvas.mm(5)),
                ],
                canvas.mm(1.5),
            )
        )
    draw_shapes(canvas, shapes, 0.5, "surgical_hardware_wires")


def render_lateral(
    plan: PhantomPlan,
    rng: np.random.Generator,
    size: int,
    spacing: float,
    banks: Banks,
    facing_right: bool,
) -> Rendered:
    """Draw one lateral phantom for ``plan`` (mirrored when the patient faces image left)."""
    anatomy = build_lateral(rng, min(size, GRID), banks, plan.ctr)
    canvas = draw.Canvas.start(anatomy, size, spacing)
    drawn = []
    for spec in plan.findings:
        if spec.finding not in LATERAL_FINDINGS:
            continue
        one = replace(spec, sides=(0,))
        if spec.finding == PLEURAL_EFFUSION:
            _effusion(canvas, spec, rng)
        elif spec.finding in (CONSOLIDATION, PNEUMONIA, LUNG_OPACITY):
            draw.draw_airspace(canvas, one, rng)
        elif spec.finding == EDEMA:
            draw.draw_edema(canvas, spec, rng)
        elif spec.finding == LUNG_LESION:
            stamps.draw_lesions(canvas, one, rng)
        elif spec.finding == SUPPORT_DEVICES:
            _devices(canvas, spec, rng)
        drawn.append(spec.finding)
    for spec in plan.extras:
        if spec.finding == "calcified_granuloma":
            stamps.draw_lesions(canvas, replace(spec, sides=(0,)), rng)
        elif spec.finding == "surgical_hardware" and spec.kind == "wires":
            _wires(canvas, rng)
    canvas.grid_masks = {k.removesuffix("_right"): v for k, v in canvas.grid_masks.items()}
    canvas.patch_masks = [(k.removesuffix("_right"), v) for k, v in canvas.patch_masks]
    lungs = anatomy.lungs[:1] * (1.0 - canvas.grid_masks.get("pleural_effusion", 0.0))
    marker = "L" if rng.random() < 0.6 else ""
    pixels = compose(canvas, rng, np.concatenate([lungs, np.zeros_like(lungs)]), one_lung=True)
    masks = full_masks(canvas, np.concatenate([lungs, np.zeros_like(lungs)]), anatomy.heart)
    masks = {("lungs" if k == "lung_right" else k): v for k, v in masks.items()}
    if not facing_right:
        pixels = np.ascontiguousarray(pixels[:, ::-1])
        masks = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in masks.items()}
    if marker:
        add_side_marker(pixels, rng, marker)
    return Rendered(
        pixels=pixels,
        masks=masks,
        drawn=drawn,
        extras=[s.finding for s in plan.extras],
        measures={
            "heart_to_thorax_depth": round(anatomy.ctr, 4),
            "lung_template": anatomy.template,
        },
        marker=marker,
    )
