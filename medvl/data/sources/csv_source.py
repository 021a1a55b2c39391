"""A generic CSV of images and reports, for datasets with no adapter of their own.

One row per image::

    image,report,study,patient,view,mask,Cardiomegaly,Pleural Effusion
    imgs/a.dcm,"FINDINGS: ... IMPRESSION: ...",st1,pt1,PA,masks/a.png,1.0,

Only the image column is required; the column names are arguments. Relative paths are
resolved against ``root`` (default: the CSV's folder). DICOM files have their headers read
(no pixels); other files are opened with PIL for their size. Label columns are the CheXpert-14
names present in the header (cells 1 / 0 / -1 / blank, with or without ``.0``). Rows that
share a study id form one Study (the first row's report and labels win); without a study
column every row is its own study. A mask column gives one SegSample per row with a mask.

A user's CSV is user data: report text is scrubbed of identifiers (names, IDs, dates; see
:func:`medvl.io.deid.scrub_report_text`) unless ``scrub_reports=False`` says the corpus is
already de-identified, and study and image ids are salted hashes of the study column (or the
CSV's name and row) and of the image path, so names in folders or files never reach a record.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from medvl.data.records import SegSample, Study, split_of
from medvl.data.sources.common import (
    SourceResult,
    labels_from_row,
    open_text,
    raster_record,
    read_header,
    scrub_studies,
)
from medvl.io.reports import split_sections

log = logging.getLogger(__name__)

SOURCE = "csv"


def _key(value: str, salt: str) -> str:
    from medvl.io.dicom import hash_uid

    return hash_uid(value, salt=salt)


def _resolve(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def load_csv(
    csv_path: str | Path,
    *,
    root: str | Path | None = None,
    image_col: str = "image",
    report_col: str | None = "report",
    study_col: str | None = None,
    patient_col: str | None = None,
    view_col: str | None = None,
    mask_col: str | None = None,
    structure: str = "lesion",
    source: str = SOURCE,
    seed: int = 0,
    scrub_reports: bool = True,
) -> SourceResult:
    """Read a generic image/report CSV into Studies (and SegSamples when masks are given).

    Columns named as optional arguments but absent from the CSV are ignored, except the image
    column, which must exist. Rows with a missing or unreadable image, a missing mask file or a
    bad label cell are failures. ``patient_key`` is a salted hash of the patient column (or of
    the study id); ``source`` names the dataset in the records.

    Raises
    ------
    ValueError
        If the CSV has no image column.
    """
    csv_path = Path(csv_path)
    base = Path(root) if root is not None else csv_path.parent
    result = SourceResult(source=source)
    studies: dict[str, Study] = {}
    with open_text(csv_path) as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or [])
        if image_col not in columns:
            raise ValueError(
                f"{csv_path}: no image column {image_col!r}; columns: {sorted(columns)}"
            )

        def cell(row: dict[str, str], col: str | None) -> str:
            return (row.get(col) or "").strip() if col and col in columns else ""

        for lineno, row in enumerate(reader, 2):
            where = f"{csv_path.name}:{lineno}"
            image_value = cell(row, image_col)
            if not image_value:
                result.fail(where, "row has no image path")
                continue
            image_path = _resolve(base, image_value)
            try:
                labels = labels_from_row(row)
                image_id = _key(str(image_path), f"{source}:image:")
                if image_path.suffix.lower() == ".dcm":
                    image = read_header(image_path, image_id)
                else:
                    image = raster_record(image_path, image_id)
            except ValueError as err:
                result.fail(where, str(err))
                continue
            mask_value = cell(row, mask_col)
            mask_path = _resolve(base, mask_value) if mask_value else None
            if mask_path is not None and not mask_path.is_file():
                result.fail(where, "mask file not found")
                continue
            study_id = _key(cell(row, study_col) or f"{csv_path.stem}-{lineno}", f"{source}:study:")
            patient_key = _key(cell(row, patient_col) or study_id, f"{source}:")
            image.study_id, image.patient_key = study_id, patient_key
            image.view_position = cell(row, view_col).upper() or image.view_position
            split = split_of(patient_key, seed=seed)
            if mask_path is not None:
                image.masks[structure] = str(mask_path)
                result.seg_samples.append(
                    SegSample(
                        image_path=image.path,
                        mask_path=str(mask_path),
                        structure=structure,
                        image_id=image.image_id,
                        patient_key=patient_key,
                        pixel_spacing=image.pixel_spacing,
                        split=split,
                    )
                )
            if study_id not in studies:
                text = cell(row, report_col)
                studies[study_id] = Study(
                    study_id=study_id,
                    patient_key=patient_key,
                    source=source,
                    report_text=text,
                    sections=split_sections(text) if text else {},
                    labels=labels,
                    split=split,
                )
            studies[study_id].images.append(image)
    result.studies = list(studies.values())
    if scrub_reports:
        scrub_studies(result.studies)
    result.log_summary(log)
    return result
