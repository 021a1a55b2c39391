"""Real shape banks and the anatomy built from them."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.data.phantom import shapes as shapes
from medvl.data.phantom.anatomy import LEFT, RIGHT, AnatomyOptions, build_frontal, warp_box
from medvl.data.phantom.draw import Canvas, draw_effusion
from medvl.data.phantom.generate import load_banks
from medvl.data.phantom.plan import FindingSpec
from medvl.findings import PLEURAL_EFFUSION


@pytest.fixture(scope="module")
def banks():
    return load_banks()


def _disc(size, cy, cx, r):
    ys, xs = np.ogrid[:size, :size]
    return (ys - cy) ** 2 + ((xs - cx) / 0.6) ** 2 < r * r


def test_two_lungs_accepts_a_pair_and_rejects_crude_masks():
    pair = _disc(100, 50, 28, 30) | _disc(100, 50, 72, 28)
    left, right = shapes._two_lungs(pair)
    assert left.any() and right.any()
    assert np.nonzero(left.any(0))[0].mean() < np.nonzero(right.any(0))[0].mean()
    assert shapes._two_lungs(_disc(100, 50, 50, 30)) is None  # one blob
    boxes = np.zeros((100, 100), bool)
    boxes[20:80, 10:40] = boxes[20:80, 60:90] = True
    assert shapes._two_lungs(boxes) is None  # box-shaped annotation
    cut = pair.copy()
    cut[40:60, :15] = True  # the left lung now runs off the image
    assert shapes._two_lungs(cut) is None  # touches the border


def test_fill_holes_and_solidity():
    ring = _disc(60, 30, 30, 20) & ~_disc(60, 30, 30, 8)
    assert shapes._fill_holes(ring).sum() == _disc(60, 30, 30, 20).sum()
    assert shapes._solidity(_disc(60, 30, 30, 20)) > 0.95
    notched = _disc(60, 30, 30, 20)
    notched[10:50, 25:35] = False
    assert shapes._solidity(notched) < 0.85


def test_lung_bank_holds_real_left_right_pairs(banks):
    bank = banks.lungs
    assert len(bank) > 300 and bank.masks.shape[1:] == (
        2,
        shapes.BANK_RESOLUTION,
        shapes.BANK_RESOLUTION,
    )
    assert np.all(bank.aspect > 0.5) and np.all(bank.aspect < 2.0)
    centre = np.arange(shapes.BANK_RESOLUTION)
    for i in range(0, len(bank), 37):
        right, left = bank.masks[i, RIGHT] > 127, bank.masks[i, LEFT] > 127
        assert centre[right.any(0)].mean() < centre[left.any(0)].mean()


def test_pneumothorax_bank_is_real_siim_shapes(banks):
    bank = banks.pneumothorax
    assert len(bank) > 500 and set(np.unique(bank.side)) == {0, 1}
    assert all(m.any() for m in bank.masks[::50])
    assert bank.envelope[RIGHT][0] < 0.5 < bank.envelope[LEFT][0]
    assert np.all(bank.envelope[:, 1] < bank.envelope[:, 2])


def test_textures_are_identical_on_every_call():
    a, b = shapes.vessel_bank(), shapes.vessel_bank.__wrapped__()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    crop = shapes.noise_crop(64, np.random.default_rng(0))
    assert crop.shape == (64, 64) and abs(float(crop.std()) - 1.0) < 0.1


def test_warp_box_places_a_template_in_the_box():
    template = np.ones((32, 32), np.float32)
    out = warp_box(template, 100, (20, 30, 60, 90))
    rows, cols = np.nonzero(out.any(1))[0], np.nonzero(out.any(0))[0]
    assert abs(rows[0] - 30) <= 1 and abs(rows[-1] - 89) <= 1
    assert abs(cols[0] - 20) <= 1 and abs(cols[-1] - 59) <= 1


@pytest.mark.parametrize("ctr", [0.40, 0.46, 0.52, 0.62])
def test_heart_is_drawn_at_the_requested_cardiothoracic_ratio(banks, ctr):
    for seed in range(3):
        anatomy = build_frontal(
            np.random.default_rng(seed), 192, banks.lungs, AnatomyOptions(ctr=ctr)
        )
        assert abs(anatomy.ctr - ctr) < 0.012
        assert (anatomy.lungs.sum(0) * anatomy.heart).max() < 0.3  # the heart hides the lung


def test_effusion_fills_the_costophrenic_angle_first(banks):
    anatomy = build_frontal(np.random.default_rng(4), 192, banks.lungs, AnatomyOptions())
    canvas = Canvas.start(anatomy, 384, 0.5)
    draw_effusion(
        canvas, FindingSpec(PLEURAL_EFFUSION, (LEFT,), 0.2, 1.0), np.random.default_rng(0)
    )
    fluid = canvas.grid_masks["pleural_effusion_left"] > 0.5
    lowest = int(np.nonzero((anatomy.lungs[LEFT] > 0.5).any(1))[0][-1])
    assert fluid[lowest].any()  # the lowest lung row (the angle) is fluid
    assert canvas.density[fluid].mean() > anatomy.density[fluid].mean() + 0.05
    rows = np.nonzero(fluid.any(1))[0]
    lung_rows = np.nonzero((anatomy.lungs[LEFT] > 0.5).any(1))[0]
    assert len(rows) < 0.5 * len(lung_rows)  # a small effusion stays basal
