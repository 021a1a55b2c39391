"""Propagation stop rules: each rule ends the walk at the first slice past a sphere's ends.

A scripted decoder returns the sphere's exact cross-section on the slices that hold it and a
"leak" elsewhere (what a weak decoder does past an organ's end: it still answers the box). Each
leak breaks one rule; without that rule the walk keeps the leak, with it the mask is the sphere.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch

from medvl.models.sam import SamConfig, build_sam
from medvl.models.sam.predict import PropagationStop, SamSegmenter, SegPrediction

DEPTH, HEIGHT, WIDTH = 13, 40, 56


def _sphere() -> np.ndarray:
    zz, yy, xx = np.mgrid[:DEPTH, :HEIGHT, :WIDTH]
    return ((zz - 6) / 3.2) ** 2 + ((yy - 20) / 12) ** 2 + ((xx - 30) / 15) ** 2 <= 1


def _leak(kind: str, box: np.ndarray, previous_area: int) -> tuple[np.ndarray, float]:
    """A mask (and IoU score) past the sphere that breaks the rule named ``kind``."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    x0, y0, x1, y1 = box.round().astype(int)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if kind in ("growth", "score"):
        mask[y0 : y1 + 1, x0 : x1 + 1] = True  # the whole prompted box
    elif kind in ("collapse", "start"):
        mask[cy, cx] = True  # a speck
    elif kind == "overlap":
        side = max(1, round(math.sqrt(previous_area)))
        mask[:side, WIDTH - side :] = True  # as large as the last slice, somewhere else
    return mask, 0.2 if kind == "score" else 0.9


def _segment(kind: str, truth: np.ndarray, stop: PropagationStop | None = None):
    """Propagate from the sphere's middle slice with the scripted decoder."""
    seg = SamSegmenter(build_sam(SamConfig(variant="tiny", img_size=64)), device="cpu")
    volume = truth.astype(np.float32)
    base, seen = volume.__array_interface__["data"][0], []

    def embed(images):
        seen.append((images[0].__array_interface__["data"][0] - base) // volume.strides[0])
        return torch.zeros(1, 1, 1, 1), [None]

    def decode(embeddings, geometries, boxes=None, points=None, point_labels=None):
        z = seen[-1]
        if truth[z].any():
            mask, score = truth[z], 0.9
        else:
            neighbour = z - 1 if z > 6 else z + 1
            mask, score = _leak(kind, np.asarray(boxes[0]), int(truth[neighbour].sum()))
        return SegPrediction(mask[None], np.array([score]), torch.zeros(1, 1, 1), np.zeros(1))

    seg.embed, seg.decode = embed, decode  # type: ignore[method-assign]
    box = [15, 8, 45, 32]
    return seg.predict_volume(volume, box, mode="propagate", start_slice=6, margin_px=3, stop=stop)


RULES = {
    "collapse": (PropagationStop(min_area_ratio=0.05), "area_collapse"),
    "growth": (PropagationStop(max_area_ratio=2.0), "area_growth"),
    "start": (PropagationStop(min_start_ratio=0.05), "below_start_area"),
    "score": (PropagationStop(min_score=0.5), "low_score"),
    "overlap": (PropagationStop(min_overlap=0.1), "low_overlap"),
}


def test_the_sphere_itself_breaks_no_rule() -> None:
    """The thresholds above sit outside what the sphere's own cross-sections do."""
    truth = _sphere()
    held = [z for z in range(DEPTH) if truth[z].any()]
    assert held == list(range(3, 10))
    areas = [int(truth[z].sum()) for z in held]
    ratios = [min(a, b) / max(a, b) for a, b in pairwise(areas)]
    overlaps = [
        (truth[a] & truth[b]).sum() / (truth[a] | truth[b]).sum() for a, b in pairwise(held)
    ]
    assert min(ratios) > 0.15 and min(overlaps) > 0.15 and min(areas) / max(areas) > 0.1


@pytest.mark.parametrize("kind", sorted(RULES))
def test_each_rule_stops_at_the_sphere_ends(kind: str) -> None:
    truth = _sphere()
    stop, reason = RULES[kind]
    leaked = _segment(kind, truth)
    assert leaked.mask[:3].any() and leaked.mask[10:].any()  # no rule: the leak is kept
    result = _segment(kind, truth, stop)
    np.testing.assert_array_equal(result.mask, truth)
    assert result.stops == {10: reason, 2: reason}
    assert sorted(result.scores) == list(range(2, 11))  # nothing prompted past a stop


def test_an_empty_mask_stops_too_and_rules_are_checked() -> None:
    truth = _sphere()
    result = _segment("empty", truth)
    np.testing.assert_array_equal(result.mask, truth)
    assert result.stops == {10: "empty", 2: "empty"}
    assert PropagationStop().reason(truth[6], -0.3, truth[6], 1) is None  # all rules off
    for bad in ({"min_overlap": 1.5}, {"min_score": -0.1}, {"max_area_ratio": 0.5}):
        with pytest.raises(ValueError, match="must"):
            PropagationStop(**bad)
