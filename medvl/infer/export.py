"""Write one study's result as JSON, DICOM SEG (one per segmented image) and DICOM SR.

The JSON is always written, last and atomically (it describes the DICOM objects beside it, so a
reader that sees it can trust they are complete), and never holds identifiers unless asked.
SEG and SR are clinical objects filed with the patient, so they carry the source images' patient
and study modules (as every DICOM derived object must); they are written only when asked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom

from medvl.infer.json_result import write_result_json
from medvl.infer.result import StudyResult
from medvl.infer.seg import build_segmentation
from medvl.infer.sr import build_findings_report
from medvl.infer.volume_seg import write_series_segmentations

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
    written = _write_dicom(result, out_dir, write_seg, write_sr) if result.images else []
    if write_seg and result.series:
        written += write_series_segmentations(
            result.series, out_dir, result.model.sam_sha256, _with_type2
        )
    write_result_json(
        result, out_dir / "result.json", include_identifiers
    )  # last: it describes them
    logger.info(
        "study %s: wrote %d DICOM objects and result.json", result.study_uid_hash, len(written)
    )
    return written


def _write_dicom(result: StudyResult, out_dir: Path, write_seg: bool, write_sr: bool) -> list[Path]:
    if not (write_seg or write_sr):
        return []
    sources = {
        image.sop_uid_hash: _with_type2(pydicom.dcmread(image.source_path, stop_before_pixels=True))
        for image in result.images
    }
    written: list[Path] = []
    if write_seg:
        for image in result.images:
            if not image.segments:
                continue
            seg = build_segmentation(
                sources[image.sop_uid_hash], image.segments, result.model.sam_sha256
            )
            path = out_dir / f"seg_{image.sop_uid_hash}.dcm"
            seg.save_as(path)
            written.append(path)
    if write_sr and any(image.findings for image in result.images):
        path = out_dir / "findings_sr.dcm"
        build_findings_report(result, sources).save_as(path)
        written.append(path)
    return written


# Type 2 attributes of the Patient and General Study modules: they must be present in the SEG and
# SR (empty when unknown), and highdicom copies them from the source, which may lack them.
TYPE2_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


def _with_type2(source: pydicom.Dataset) -> pydicom.Dataset:
    """``source`` (in memory only) with every missing Type 2 attribute present and empty."""
    for keyword in TYPE2_COPIED:
        if keyword not in source:
            setattr(source, keyword, "")
    return source
