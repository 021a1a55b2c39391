"""Write one study's result as JSON, DICOM SEG (one per segmented image) and DICOM SR.

The JSON is always written and never holds identifiers unless asked. SEG and SR are clinical
objects filed with the patient, so they carry the source images' patient and study modules (as
every DICOM derived object must); they are written only when the config asks for them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom

from medvl.infer.json_result import write_result_json
from medvl.infer.result import StudyResult
from medvl.infer.seg import build_segmentation
from medvl.infer.sr import build_findings_report

logger = logging.getLogger(__name__)


def export_study(
    result: StudyResult,
    out_dir: str | Path,
    *,
    write_seg: bool = True,
    write_sr: bool = True,
    include_identifiers: bool = False,
) -> list[Path]:
    """Write ``result.json`` and the DICOM objects into ``out_dir``; return the DICOM paths.

    The returned paths are what a listener forwards to the PACS.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_result_json(result, out_dir / "result.json", include_identifiers)
    if not result.images or not (write_seg or write_sr):
        return []
    sources = {
        image.sop_uid_hash: pydicom.dcmread(image.source_path, stop_before_pixels=True)
        for image in result.images
    }
    written: list[Path] = []
    if write_seg:
        for image in result.images:
            if not image.segments:
                continue
            seg = build_segmentation(
                sources[image.sop_uid_hash], image.segments, result.model.sam or ""
            )
            path = out_dir / f"seg_{image.sop_uid_hash}.dcm"
            seg.save_as(path)
            written.append(path)
    if write_sr and any(image.findings for image in result.images):
        path = out_dir / "findings_sr.dcm"
        build_findings_report(result, sources).save_as(path)
        written.append(path)
    logger.info(
        "study %s: wrote result.json and %d DICOM objects", result.study_uid_hash, len(written)
    )
    return written
