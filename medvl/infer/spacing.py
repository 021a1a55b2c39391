"""Physical pixel spacing of a projection radiograph, and where it came from.

PixelSpacing, when present, is already calibrated to the patient. ImagerPixelSpacing is measured
at the detector: objects in the patient are magnified by the beam geometry, so it must be divided
by EstimatedRadiographicMagnificationFactor (PS3.3 C.8.11.7; a factor of 1.1 otherwise inflates
areas by 21%). The JSON and the SEG say which of these an area rests on.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

PIXEL_SPACING = "PixelSpacing"
IMAGER_CORRECTED = "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
IMAGER_UNCORRECTED = "ImagerPixelSpacing (no magnification factor: detector plane)"


def _pair(value: object) -> tuple[float, float] | None:
    try:
        row, column = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return (row, column) if row > 0 and column > 0 else None


def physical_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """(row, column) spacing in mm at the patient, and the source named as in the JSON."""
    spacing = _pair(ds.get("PixelSpacing"))
    if spacing is not None:
        return spacing, PIXEL_SPACING
    imager = _pair(ds.get("ImagerPixelSpacing"))
    if imager is None:
        return None, None
    try:
        factor = float(ds.get("EstimatedRadiographicMagnificationFactor") or 0)
    except (TypeError, ValueError):
        factor = 0.0
    if factor > 0:
        return (imager[0] / factor, imager[1] / factor), IMAGER_CORRECTED
    return imager, IMAGER_UNCORRECTED
