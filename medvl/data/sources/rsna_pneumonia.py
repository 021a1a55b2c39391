"""RSNA Pneumonia Detection Challenge (Kaggle, 2018): DICOMs + bounding-box CSV.

Layout read::

    ROOT/stage_2_train_images/<patientId>.dcm
    ROOT/stage_2_train_labels.csv              patientId, x, y, width, height, Target
    ROOT/stage_2_detailed_class_info.csv       patientId, class   (optional)

One row per box; ``Target`` 0 rows have empty coordinates. The images are a subset of NIH
ChestX-ray14 re-annotated by radiologists; a box marks a lung opacity suggestive of pneumonia.
Each image becomes a Study with labels Lung Opacity = Pneumonia = Target (and No Finding from the
detailed class file: 1 for "Normal", 0 otherwise) and, for SAM work, a SegSample whose mask is
the union of its boxes (written as PNG under ``out_dir/masks``). The stage-1 file names
(``stage_1_*``) and zipped CSVs are found too.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvl.data.records import Study, split_of
from medvl.data.sources.common import (
    SourceResult,
    add_mask_sample,
    find_file,
    find_optional,
    matched_dicoms,
    open_text,
    read_header,
)
from medvl.findings import LUNG_OPACITY, NEGATIVE, NO_FINDING, PNEUMONIA, POSITIVE

log = logging.getLogger(__name__)

SOURCE = "rsna_pneumonia"
STRUCTURE = "lung_opacity"
LABEL_CSV_NAMES = (
    "stage_2_train_labels.csv", "stage_1_train_labels.csv",
    "stage_2_train_labels.csv.zip", "stage_1_train_labels.csv.zip",
)  # fmt: skip
CLASS_CSV_NAMES = ("stage_2_detailed_class_info.csv", "stage_1_detailed_class_info.csv")
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


@dataclass(frozen=True)
class Box:
    """One opacity box in pixel units: top-left corner (x, y), width and height."""

    x: float
    y: float
    width: float
    height: float


def read_box_table(path: str | Path) -> tuple[dict[str, list[Box]], list[tuple[int, str]]]:
    """Read the labels CSV into ``{patientId: [Box, ...]}`` (empty list = negative).

    Returns the table and ``(line, problem)`` for rows that could not be used: a missing id, a
    Target other than 0/1, a positive row without valid coordinates (its patient is dropped: a
    mask missing a box would be wrong), or a patient with both negative and positive rows.
    """
    table: dict[str, list[Box]] = {}
    negatives: set[str] = set()
    broken: set[str] = set()
    problems: list[tuple[int, str]] = []
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; not an RSNA labels file")
        for lineno, row in enumerate(reader, 2):
            pid, target = (row["patientId"] or "").strip(), (row["Target"] or "").strip()
            if not pid or target not in ("0", "1"):
                problems.append((lineno, "row needs a patientId and Target 0 or 1"))
                continue
            table.setdefault(pid, [])
            if target == "0":
                negatives.add(pid)
                continue
            try:
                box = Box(*(float(row[c]) for c in ("x", "y", "width", "height")))
            except (TypeError, ValueError):
                problems.append((lineno, "positive row without numeric x, y, width, height"))
                broken.add(pid)
                continue
            if not all(map(math.isfinite, (box.x, box.y))) or box.width <= 0 or box.height <= 0:
                problems.append((lineno, "box has a non-finite corner or non-positive size"))
                broken.add(pid)
                continue
            table[pid].append(box)
    for pid in broken:
        del table[pid]
    for pid in sorted(negatives - broken):
        if table[pid]:
            problems.append((0, f"patient {pid} has both Target 0 and Target 1 rows"))
    return table, problems


def read_class_table(path: str | Path) -> dict[str, str]:
    """``{patientId: class}`` from ``stage_2_detailed_class_info.csv``."""
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        if not {"patientId", "class"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs columns patientId and class")
        return {r["patientId"].strip(): r["class"].strip() for r in reader if r["patientId"]}


def box_mask(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    """Union of boxes as a boolean ``shape`` mask; boxes are clipped to the image."""
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        x0, y0 = max(0, int(math.floor(box.x))), max(0, int(math.floor(box.y)))
        x1 = min(shape[1], int(math.ceil(box.x + box.width)))
        y1 = min(shape[0], int(math.ceil(box.y + box.height)))
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return mask


def load_rsna(
    root: str | Path,
    out_dir: str | Path,
    *,
    labels_csv: str | Path | None = None,
    include_negatives: bool = True,
    seed: int = 0,
) -> SourceResult:
    """Read the RSNA tree into one Study per image and one box-mask SegSample per image.

    ``include_negatives=False`` writes SegSamples only for images with boxes (negatives keep
    their Study). Missing DICOMs, DICOMs without a label row and malformed rows are failures.
    """
    root, out_dir = Path(root), Path(out_dir)
    labels_path = Path(labels_csv) if labels_csv else find_file(root, LABEL_CSV_NAMES)
    table, problems = read_box_table(labels_path)
    class_path = find_optional(root, CLASS_CSV_NAMES)
    classes = read_class_table(class_path) if class_path else {}
    result = SourceResult(source=SOURCE)
    for lineno, problem in problems:
        result.fail(f"{labels_path.name}:{lineno}", problem)
    for pid, path in matched_dicoms(root, table, labels_path.name, result):
        try:
            record = read_header(path, image_id=pid)
        except ValueError as err:
            result.fail(path, str(err))
            continue
        boxes = table[pid]
        target = POSITIVE if boxes else NEGATIVE
        labels = {LUNG_OPACITY: target, PNEUMONIA: target}
        if pid in classes:
            labels[NO_FINDING] = POSITIVE if classes[pid] == "Normal" else NEGATIVE
        record.study_id = pid
        split = split_of(record.patient_key, seed=seed)
        if boxes or include_negatives:
            mask = box_mask(boxes, (record.rows, record.columns))
            png = out_dir / "masks" / f"{record.sop_uid_hash or pid}.png"
            add_mask_sample(result, record, mask, png, STRUCTURE, split)
        result.studies.append(
            Study(
                study_id=pid,
                patient_key=record.patient_key,
                source=SOURCE,
                labels=labels,
                images=[record],
                split=split,
            )
        )
    result.log_summary(log)
    return result
