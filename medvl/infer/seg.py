"""DICOM Segmentation objects (via highdicom) for masks predicted on a radiograph.

One SEG instance per source image, one segment per structure, BINARY type, referencing the
source SOP Instance so a viewer overlays it on the right image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from medvl import __version__
from medvl.infer.codes import (
    ARTIFICIAL_INTELLIGENCE,
    coding_scheme_identification,
    structure_codes,
    uses_local_scheme,
)
from medvl.infer.result import SegmentMask

MANUFACTURER = "medvl"
SEG_ALGORITHM = "medvl SAM segmentation"
SEG_SERIES_DESCRIPTION = "medvl AI segmentation (not for diagnosis)"


def algorithm_version(weights_sha256: str | None) -> str:
    """medvl's version plus the first 12 hex digits of the weights' SHA-256 (LO: 64 chars)."""
    return f"{__version__} sha256:{weights_sha256[:12]}" if weights_sha256 else __version__


def algorithm_identification(name: str, version: str) -> hd.AlgorithmIdentificationSequence:
    """Identify the algorithm by name and version (never by a file path)."""
    return hd.AlgorithmIdentificationSequence(
        name=name[:64], family=ARTIFICIAL_INTELLIGENCE, version=version[:64]
    )


def segment_descriptions(
    structures: Sequence[str], codes_of: Callable[[str], tuple[Code, Code]], version: str
) -> list[hd.seg.SegmentDescription]:
    """One automatic segment per structure, numbered from 1, coded by ``codes_of``.

    Every medvl SEG (a radiograph's, a CT series') describes its segments this way: the
    structure name as label and tracking ID, a fresh tracking UID, and this algorithm.
    """
    algorithm = algorithm_identification(SEG_ALGORITHM, version)
    out = []
    for number, structure in enumerate(structures, start=1):
        category, prop = codes_of(structure)
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=structure[:64],
                segmented_property_category=category,
                segmented_property_type=prop,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=generate_uid(),
                tracking_id=f"medvl {structure}"[:64],
            )
        )
    return out


def binary_segmentation(
    sources: Sequence[Dataset],
    pixels: np.ndarray,
    structures: Sequence[str],
    codes_of: Callable[[str], tuple[Code, Code]],
    series_number: int,
    version: str,
    **options: object,
) -> hd.seg.Segmentation:
    """A BINARY SEG of ``sources`` with the series, device and algorithm fields every medvl SEG
    shares (one radiograph or a CT series): one segment per structure
    (:func:`segment_descriptions`), the private scheme declared when a code uses it.
    ``options`` go to highdicom as they are."""
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(structures, codes_of, version),
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=SEG_ALGORITHM,
        software_versions=version,
        device_serial_number="0",
        series_description=SEG_SERIES_DESCRIPTION,
        **options,
    )
    if any(uses_local_scheme(*codes_of(structure)) for structure in structures):
        seg.CodingSchemeIdentificationSequence = coding_scheme_identification()
    return seg


def build_segmentation(
    source: Dataset,
    segments: Sequence[SegmentMask],
    weights_sha256: str | None = None,
    series_number: int = 900,
) -> hd.seg.Segmentation:
    """A BINARY DICOM SEG of ``segments`` on the single-frame ``source`` image.

    The SEG frame is the source's pixel grid, referenced by SOP Instance, so it states no Pixel
    Measures: a projection radiograph has no slice, and the macro would demand a SliceThickness
    that does not exist (DICOM requires it whenever Pixel Measures are present). Physical areas
    live in the JSON with the spacing's source named (:mod:`medvl.infer.spacing`).
    PatientOrientation (Type 2C for images without a patient plane) is copied from the source.

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
    names = [seg.structure for seg in segments]
    pixels = np.stack([seg.mask.astype(bool) for seg in segments], axis=-1)[None]
    seg = binary_segmentation(
        [source], pixels, names, structure_codes, series_number,
        algorithm_version(weights_sha256), omit_empty_frames=False,
    )  # fmt: skip
    for group in seg.SharedFunctionalGroupsSequence:
        if "PixelMeasuresSequence" in group:
            del group.PixelMeasuresSequence
    seg.PatientOrientation = source.get("PatientOrientation", "")
    return seg
