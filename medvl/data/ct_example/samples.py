"""Axial slices of the CT example as SegSamples for ``segment-finetune``, split by slab.

Every (slice, chosen structure) whose mask covers at least ``min_area_px`` pixels becomes one
SegSample: the image is the slice's DICOM file (the job windows it with ``data.window``), the
mask a PNG under ``masks/<z>/<structure>.png``, and the split comes from
:func:`medvl.data.seg_samples.slab_split` (gap slices are left out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvl.data.records import SegSample
from medvl.data.sources.common import write_mask_png

PATIENT_KEY = "ct_example"


def slice_samples(
    label_map: np.ndarray,
    names: list[str],
    slice_paths: list[Path],
    out_dir: str | Path,
    pixel_spacing: tuple[float, float],
    splits: list[str],
    min_area_px: int = 1,
) -> list[SegSample]:
    """Write the mask PNGs and return one SegSample per kept (slice, structure)."""
    out_dir = Path(out_dir)
    samples = []
    for z, split in enumerate(splits):
        if not split:
            continue
        for number, name in enumerate(names, start=1):
            mask = label_map[z] == number
            if int(mask.sum()) < min_area_px:
                continue
            mask_path = write_mask_png(out_dir / "masks" / f"{z:04d}" / f"{name}.png", mask)
            samples.append(
                SegSample(
                    image_path=str(Path(slice_paths[z]).resolve()),
                    mask_path=str(mask_path.resolve()),
                    structure=name,
                    image_id=f"{PATIENT_KEY}_{z:04d}",
                    patient_key=PATIENT_KEY,
                    pixel_spacing=pixel_spacing,
                    split=split,
                )
            )
    return samples


__all__ = ["PATIENT_KEY", "slice_samples"]
