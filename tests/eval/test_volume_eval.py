"""3-D evaluation: the prompt comes from the largest cross-section; scores and volumes add up."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medvl.eval.volume_eval import dice, evaluate_volume, largest_cross_section
from medvl.models.sam.predict import VolumePrediction


class Recorder:
    """Stands in for a SamSegmenter: returns a fixed mask, records the prompt it got."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks, self.calls = iter(masks), []

    def predict_volume(self, volume, box, z_range=None, mode="box3d", start_slice=None, **_):
        self.calls.append((list(box), mode, start_slice))
        return VolumePrediction(next(self.masks))


def _labels() -> np.ndarray:
    labels = np.zeros((6, 20, 20), dtype=np.uint8)
    labels[1:5, 4:10, 4:10] = 1
    labels[3, 2:12, 3:11] = 1  # the largest cross-section of structure 1
    labels[2:4, 14:18, 14:18] = 2
    return labels


def test_box_on_largest_cross_section_and_exact_numbers() -> None:
    labels = _labels()
    assert largest_cross_section(labels == 1) == 3
    half = labels == 2
    half[3] = False  # structure 2 predicted on one of its two slices
    segmenter = Recorder([labels == 1, half])
    rows = evaluate_volume(
        segmenter, np.zeros(labels.shape), labels, ["a", "b"], (2.5, 0.5, 0.5), held_out=[3]
    )
    assert segmenter.calls[0] == ([3, 2, 10, 11], "propagate", 3)
    a, b = rows
    assert a.dice == pytest.approx(1.0) and a.nsd == pytest.approx(1.0) and a.volume_error == 0
    assert a.label_slices == 4 and a.dice_held_out == pytest.approx(1.0)
    assert b.dice == pytest.approx(2 * 16 / (16 + 32))
    assert b.volume_error == pytest.approx(-0.5)
    assert b.label_ml == pytest.approx(32 * 2.5 * 0.25 / 1000)
    assert b.dice_held_out == pytest.approx(0.0)  # slice 3 held out, and missed there


def test_dice_nan_for_empty_label() -> None:
    empty = np.zeros((2, 3), bool)
    assert math.isnan(dice(empty, empty))
    assert dice(np.ones((2, 3), bool), np.ones((2, 3), bool)) == pytest.approx(1.0)
