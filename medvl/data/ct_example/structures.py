"""The chosen structures of the CT example: TotalSegmentator labels grouped, and their codes.

A chosen structure is one or more TotalSegmentator structures merged (the lung lobes become
one lung per side). Each has a SNOMED CT property type for the DICOM SEG.
"""

from __future__ import annotations

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

DEFAULT_STRUCTURES: dict[str, list[str]] = {
    "lung_left": ["lung_upper_lobe_left", "lung_lower_lobe_left"],
    "lung_right": ["lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"],
    "heart": ["heart"],
    "aorta": ["aorta"],
    "liver": ["liver"],
    "spleen": ["spleen"],
    "kidney_left": ["kidney_left"],
    "kidney_right": ["kidney_right"],
    "vertebrae_T8": ["vertebrae_T8"],
    "vertebrae_T12": ["vertebrae_T12"],
    "vertebrae_L1": ["vertebrae_L1"],
}
"""Chosen structure -> the TotalSegmentator structures (``structures.csv`` names) it merges."""

PROPERTY_TYPES: dict[str, Code] = {
    "lung_left": Code("44029006", "SCT", "Left lung"),
    "lung_right": Code("3341006", "SCT", "Right lung"),
    "heart": codes.SCT.Heart,
    "aorta": codes.SCT.Aorta,
    "liver": codes.SCT.Liver,
    "spleen": codes.SCT.Spleen,
    "kidney_left": Code("18639004", "SCT", "Left kidney"),
    "kidney_right": Code("9846003", "SCT", "Right kidney"),
    "vertebrae_T8": codes.SCT.T8Vertebra,
    "vertebrae_T12": codes.SCT.T12Vertebra,
    "vertebrae_L1": codes.SCT.L1Vertebra,
}
"""SNOMED CT codes of the default structures; others fall back to "Anatomical Structure"."""


def property_type(name: str) -> Code:
    """The SEG property type of a chosen structure."""
    return PROPERTY_TYPES.get(name, codes.SCT.AnatomicalStructure)


def structure_map(
    labels: np.ndarray, table: dict[str, int], chosen: dict[str, list[str]]
) -> np.ndarray:
    """A label map of the chosen structures: value ``n`` is the n-th chosen structure (1-based).

    Raises ``ValueError`` naming a TotalSegmentator structure that the table lacks.
    """
    out = np.zeros(labels.shape, dtype=np.uint8)
    for number, (name, parts) in enumerate(chosen.items(), start=1):
        unknown = [p for p in parts if p not in table]
        if unknown:
            raise ValueError(f"structure {name!r}: structures.csv has no {unknown}")
        out[np.isin(labels, [table[p] for p in parts])] = number
    return out
