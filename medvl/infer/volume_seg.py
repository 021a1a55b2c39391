"""One multi-frame DICOM SEG (highdicom) per segmented CT series, referencing every slice.

highdicom derives the frame geometry from the source slices: the shared Plane Orientation and
Pixel Measures (PixelSpacing, SliceThickness and SpacingBetweenSlices of the series) and, per
frame, the Plane Position of the slice it lies on plus a Derivation Image reference to it. Every
source instance is listed in the Referenced Series Sequence; frames where a structure is absent
are omitted (a 133-slice series x 11 structures would otherwise be 1,463 mostly empty frames).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from medvl.data.ct_example.structures import PROPERTY_TYPES
from medvl.infer.codes import structure_codes
from medvl.infer.seg import algorithm_version, binary_segmentation
from medvl.infer.volume_result import SeriesSegmentation


def volume_structure_codes(name: str) -> tuple[Code, Code]:
    """(category, type): SNOMED CT organ codes for the CT structures, else the radiograph ones."""
    if name in PROPERTY_TYPES:
        return codes.SCT.AnatomicalStructure, PROPERTY_TYPES[name]
    return structure_codes(name)


def build_volume_segmentation(
    sources: list[Dataset],
    series: SeriesSegmentation,
    weights_sha256: str | None = None,
    series_number: int = 901,
) -> hd.seg.Segmentation:
    """A BINARY multi-frame SEG of every segment of ``series`` on its slices ``sources``.

    ``sources`` are the slice datasets in the series' slice order (mask z lies on source z).

    Raises
    ------
    ValueError
        No segments, or a mask that does not match the slice count or Rows x Columns.
    """
    if not series.segments:
        raise ValueError("no segments to write")
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    for segment in series.segments:
        if segment.mask.shape != shape:
            raise ValueError(
                f"mask for {segment.structure} is {segment.mask.shape}, series {shape}"
            )
    names = [segment.structure for segment in series.segments]
    pixels = np.stack([s.mask.astype(bool) for s in series.segments], axis=-1)
    version = algorithm_version(weights_sha256)
    return binary_segmentation(
        sources, pixels, names, volume_structure_codes, series_number, version
    )


def write_series_segmentations(
    results: list[SeriesSegmentation],
    out_dir: Path,
    weights_sha256: str | None,
    prepare: Callable[[Dataset], Dataset] = lambda ds: ds,
) -> list[Path]:
    """Write ``seg_<series hash>.dcm`` for every series where a structure was found.

    ``prepare`` fills what the SEG copies from a source but the source may lack (Type 2
    patient and study attributes, :func:`medvl.infer.export._with_type2`).
    """
    written = []
    for series in results:
        if not any(s.voxels for s in series.segments):
            continue  # nothing to draw; the JSON still reports every structure (0 mL)
        sources = [
            prepare(pydicom.dcmread(p, stop_before_pixels=True)) for p in series.source_paths
        ]
        seg = build_volume_segmentation(sources, series, weights_sha256)
        path = out_dir / f"seg_{series.series_uid_hash}.dcm"
        seg.save_as(path)
        written.append(path)
    return written
