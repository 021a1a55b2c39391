"""DICOM Segmentation objects (via highdicom) for masks predicted on a radiograph.

One SEG instance per source image, one segment per structure, BINARY type, referencing the
source SOP Instance so a viewer overlays it on the right image.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medvl import __version__
from medvl.infer.codes import ARTIFICIAL_INTELLIGENCE, structure_codes
from medvl.infer.result import SegmentMask

MANUFACTURER = "medvl"


def algorithm_identification(model_name: str) -> hd.AlgorithmIdentificationSequence:
    """Identify medvl's model as the segmentation algorithm (name + package version)."""
    return hd.AlgorithmIdentificationSequence(
        name=model_name[:64] or "medvl",
        family=ARTIFICIAL_INTELLIGENCE,
        version=__version__,
    )


def build_segmentation(
    source: Dataset,
    segments: Sequence[SegmentMask],
    model_name: str,
    series_number: int = 900,
) -> hd.seg.Segmentation:
    """A BINARY DICOM SEG of ``segments`` on the single-frame ``source`` image.

    Raises
    ------
    ValueError
        If there is nothing to write or a mask does not match the source's Rows x Columns.
    """
    if not segments:
        raise ValueError("no segments to write")
    shape = (int(source.Rows), int(source.Columns))
    for seg in segments:
        if seg.mask.shape != shape:
            raise ValueError(
                f"mask for {seg.structure} is {seg.mask.shape}, source image is {shape}"
            )
    algorithm = algorithm_identification(model_name)
    descriptions = []
    for number, seg in enumerate(segments, start=1):
        category, prop = structure_codes(seg.structure)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=seg.structure[:64],
                segmented_property_category=category,
                segmented_property_type=prop,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=generate_uid(),
                tracking_id=f"medvl {seg.structure}"[:64],
            )
        )
    pixels = np.stack([seg.mask.astype(bool) for seg in segments], axis=-1)[None]
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing")
    # A projection radiograph has no slice; highdicom writes PixelMeasures without
    # SliceThickness for it and then cannot read its own SEG back, so state a nominal 1 mm.
    measures = (
        hd.PixelMeasuresSequence(pixel_spacing=[float(v) for v in spacing], slice_thickness=1.0)
        if spacing
        else None
    )
    return hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model_name[:64] or "medvl",
        software_versions=__version__,
        device_serial_number="0",
        omit_empty_frames=False,
        pixel_measures=measures,
    )
