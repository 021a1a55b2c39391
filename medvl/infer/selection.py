"""Which instances of a study the models should see, and why the others are skipped.

A PACS sends everything in a study: laterals, scout images, dose reports, other SRs, prior
results of our own. Eligibility is configuration, and every skip is recorded with a reason that
names attributes, never patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom

from medvl.infer.result import SkippedFile
from medvl.io.dicom import DicomImage, DicomReadError, hash_uid, read_dicom


@dataclass
class EligibilityConfig:
    """Rules an image must meet to be analysed."""

    modalities: tuple[str, ...] = ("CR", "DX")
    views: tuple[str, ...] = ("PA", "AP")
    allow_missing_view: bool = False  # many DX headers leave ViewPosition empty
    max_frames: int = 1


def reason_ineligible(header: DicomImage, rules: EligibilityConfig) -> str | None:
    """Why ``header`` is not eligible under ``rules``, or None when it is."""
    if header.modality not in rules.modalities:
        allowed = ", ".join(rules.modalities)
        return f"modality {header.modality or 'missing'} is not eligible ({allowed})"
    if not header.view_position:
        if not rules.allow_missing_view:
            return "ViewPosition is empty and allow_missing_view is off"
    elif header.view_position not in rules.views:
        return f"view {header.view_position} is not eligible ({', '.join(rules.views)})"
    if header.frames > rules.max_frames:
        return f"{header.frames} frames (at most {rules.max_frames})"
    if header.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return f"photometric interpretation {header.photometric} is not a grayscale radiograph"
    return None


def study_files(folder: Path) -> list[Path]:
    """Every regular file under ``folder`` (any depth, any name), sorted for reproducibility."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def select_images(
    paths: list[Path], rules: EligibilityConfig
) -> tuple[list[tuple[Path, DicomImage]], list[SkippedFile]]:
    """Split ``paths`` into eligible (path, header) pairs and skipped files with reasons.

    A SOP Instance that appears in several files (a study sent twice, copied into two folders)
    is analysed once; the other copies are skipped as duplicates.
    """
    eligible: list[tuple[Path, DicomImage]] = []
    skipped: list[SkippedFile] = []
    seen: set[str] = set()
    for path in paths:
        try:
            header = read_dicom(path, decode=False)
        except DicomReadError as err:
            skipped.append(SkippedFile(path, err.reason, _sop_key(path)))
            continue
        key = header.sop_uid_hash
        if key and key in seen:
            skipped.append(SkippedFile(path, f"duplicate of instance {key}", key))
            continue
        seen.add(key)
        reason = reason_ineligible(header, rules)
        if reason is None:
            eligible.append((path, header))
        else:
            skipped.append(SkippedFile(path, reason, key))
    return eligible, skipped


def _sop_key(path: Path) -> str:
    """The SOP Instance UID hash of a DICOM file that is not an image, else "" (path hash)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except Exception:  # not DICOM at all, or too broken to name
        return ""
    return hash_uid(str(ds.get("SOPInstanceUID", "")))
