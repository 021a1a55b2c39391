"""MIMIC-CXR (Johnson et al., 2019): DICOM or JPG tree, free-text reports, label and split CSVs.

Layout read (MIMIC-CXR DICOM release, MIMIC-CXR-JPG, or both merged)::

    ROOT/files/p10/p10000032/s50414267/02aa804e-....dcm   (or .jpg)
    ROOT/files/p10/p10000032/s50414267.txt                report of that study
    ROOT/mimic-cxr-2.0.0-chexpert.csv(.gz)                subject_id, study_id, 14 labels
    ROOT/mimic-cxr-2.0.0-negbio.csv(.gz)                  same columns, NegBio labeler
    ROOT/mimic-cxr-2.0.0-split.csv(.gz)                   dicom_id, study_id, subject_id, split
    ROOT/mimic-cxr-2.0.0-metadata.csv(.gz)                dicom_id, ..., ViewPosition, ...

Each study folder becomes one Study: report sections split by :func:`split_sections`, labels from
the chosen label file (``"chexpert"`` or ``"negbio"``; none when the file is absent), one
ImageRecord per image (DICOM headers read without pixels; JPG views from the metadata CSV), and
the official split (``validate`` -> ``"val"``) or, without a split file, a patient-level split.
``patient_key`` is a salted hash of the subject id; ``study_id`` keeps MIMIC's ``sNNNNNNNN``.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Literal

from medvl.data.records import Study, split_of
from medvl.data.sources.common import (
    SourceResult,
    find_optional,
    labels_from_row,
    open_text,
    raster_record,
    read_header,
    scrub_studies,
)
from medvl.io.reports import split_sections

log = logging.getLogger(__name__)

SOURCE = "mimic_cxr"
LabelFile = Literal["chexpert", "negbio"]
PREFIX = "mimic-cxr-2.0.0-"
IMAGE_SUFFIXES = (".dcm", ".jpg", ".jpeg", ".png")
SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}
_PATIENT_DIR = re.compile(r"^p\d+$")
_STUDY_DIR = re.compile(r"^s\d+$")


def _csv_names(kind: str) -> tuple[str, ...]:
    return (f"{PREFIX}{kind}.csv", f"{PREFIX}{kind}.csv.gz")


def patient_key_of(subject: str) -> str:
    """Pseudonymous key of a MIMIC subject id (salted hash, never the raw id)."""
    from medvl.io.dicom import hash_uid

    return hash_uid(subject.lstrip("p"), salt=f"{SOURCE}:")


def _strip_prefix(value: str, prefix: str) -> str:
    value = value.strip()
    return value[1:] if value.startswith(prefix) else value


def read_label_table(path: Path, result: SourceResult) -> dict[str, dict]:
    """``{study number: labels}`` from a CheXpert / NegBio label CSV (bad rows are failures)."""
    table: dict[str, dict] = {}
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        if "study_id" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no 'study_id' column; not a MIMIC-CXR label file")
        for lineno, row in enumerate(reader, 2):
            try:
                table[_strip_prefix(row["study_id"], "s")] = labels_from_row(row)
            except ValueError as err:
                result.fail(f"{path.name}:{lineno}", str(err))
    return table


def _read_column_map(path: Path | None, key: str, value: str) -> dict[str, str]:
    if path is None:
        return {}
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        if not {key, value} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs columns {key} and {value}")
        return {row[key].strip(): (row[value] or "").strip() for row in reader}


def _study_dirs(files_root: Path) -> list[tuple[str, Path]]:
    """``(subject, study folder)`` for every ``pXX/pNNNNNNNN/sNNNNNNNN`` folder, sorted."""
    found = []
    for group in sorted(p for p in files_root.iterdir() if p.is_dir()):
        for patient in sorted(p for p in group.iterdir() if _PATIENT_DIR.match(p.name)):
            for study in sorted(p for p in patient.iterdir() if _STUDY_DIR.match(p.name)):
                if study.is_dir():
                    found.append((patient.name, study))
    return found


def load_mimic(
    root: str | Path,
    *,
    label_file: LabelFile = "chexpert",
    seed: int = 0,
    scrub_reports: bool = True,
) -> SourceResult:
    """Read a MIMIC-CXR(-JPG) tree into Studies.

    Study folders without images or without a report, unreadable images and malformed label
    rows are recorded as failures; a study without a report keeps its images (empty text).

    Raises
    ------
    FileNotFoundError
        If ``root`` has no ``files/`` folder.
    """
    if label_file not in ("chexpert", "negbio"):
        raise ValueError(f"label_file must be 'chexpert' or 'negbio', got {label_file!r}")
    root = Path(root)
    files_root = root / "files" if (root / "files").is_dir() else None
    if files_root is None:
        raise FileNotFoundError(f"{root}: no 'files' folder (expected files/pXX/pNNNNNNNN/sNNN)")
    result = SourceResult(source=SOURCE)
    label_path = find_optional(root, _csv_names(label_file))
    labels = read_label_table(label_path, result) if label_path else {}
    if label_path is None:
        log.warning("%s: no %s label file; studies carry no labels", root, label_file)
    splits = _read_column_map(find_optional(root, _csv_names("split")), "study_id", "split")
    views = _read_column_map(
        find_optional(root, _csv_names("metadata")), "dicom_id", "ViewPosition"
    )
    for subject, study_dir in _study_dirs(files_root):
        number = study_dir.name[1:]
        report_path = study_dir.with_suffix(".txt")
        text = ""
        if report_path.is_file():
            text = report_path.read_text(encoding="utf-8", errors="replace")
        else:
            result.fail(report_path, "study has no report file")
        patient_key = patient_key_of(subject)
        images = []
        for path in sorted(p for p in study_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                if path.suffix.lower() == ".dcm":
                    image = read_header(path)
                else:
                    image = raster_record(path, view_position=views.get(path.stem, ""))
            except ValueError as err:
                result.fail(path, str(err))
                continue
            image.image_id, image.study_id, image.patient_key = (
                path.stem,
                study_dir.name,
                patient_key,
            )
            images.append(image)
        if not images:
            result.fail(study_dir, "study folder holds no readable image")
            continue
        raw_split = splits.get(number, "")
        split = SPLIT_NAMES.get(raw_split) or split_of(patient_key, seed=seed)
        result.studies.append(
            Study(
                study_id=study_dir.name,
                patient_key=patient_key,
                source=SOURCE,
                report_text=text.strip(),
                sections=split_sections(text) if text else {},
                labels=dict(labels.get(number, {})),
                images=images,
                split=split,
            )
        )
    if scrub_reports:  # MIMIC-CXR is de-identified; a local export may not be
        scrub_studies(result.studies)
    result.log_summary(log)
    return result
