"""The chosen structures as one DICOM SEG referencing the CT series (highdicom).

Binary segmentation, one segment per chosen structure, frames only where a structure is
present. The segments are marked AUTOMATIC with TotalSegmentator as the algorithm: the labels
are a model's output, not a radiologist's.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from medvl.data.ct_example.dicom_series import SeriesIdentity
from medvl.data.ct_example.structures import property_type

ALGORITHM = hd.AlgorithmIdentificationSequence(
    name="TotalSegmentator", version="2", family=codes.cid7162.ArtificialIntelligence
)


def write_ct_seg(
    series: list[Dataset],
    label_map: np.ndarray,
    names: list[str],
    path: str | Path,
    ident: SeriesIdentity | None = None,
) -> Path:
    """Write ``label_map`` ((Z, H, W), value n = ``names[n - 1]``) as a SEG on ``series``."""
    ident = ident or SeriesIdentity()
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=property_type(name),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=ALGORITHM,
        )
        for number, name in enumerate(names, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=series,
        pixel_array=label_map,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=ident.uid("seg-series"),
        series_number=2,
        sop_instance_uid=ident.uid("seg"),
        instance_number=1,
        manufacturer="medvl",
        manufacturer_model_name="medvl data ct-example",
        software_versions="medvl",
        device_serial_number="0",
        series_description="TotalSegmentator structures",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path
