"""CheXpert (Irvin et al., 2019): label CSVs + JPG images, read into Study records.

Layout read (the "small" and the full release look alike)::

    ROOT/CheXpert-v1.0-small/train.csv      Path, Sex, Age, Frontal/Lateral, AP/PA, 14 labels
    ROOT/CheXpert-v1.0-small/valid.csv
    ROOT/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg

``ROOT`` may be the release folder itself or its parent: the ``Path`` column starts with the
release folder's name, and both spellings are tried. Labels are the CSV's: 1.0 positive,
0.0 negative, -1.0 uncertain, blank not mentioned. Sex and Age are not read.

CheXpert has no report text (only labels mined from the reports by the CheXpert labeler), so
Studies carry labels and images, and ``report_text`` is empty. Images of one study (frontal and
lateral rows) form one Study. Splits: the official validation set (radiologist labels) becomes
``"test"``, since the official test set is held out; ``train.csv`` is split by patient into
``"train"`` / ``"val"`` (``val_fraction``). A ``test.csv``, when present, is ``"test"`` too.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from medvl.data.records import ImageRecord, Study, split_of
from medvl.data.sources.common import (
    SourceResult,
    find_optional,
    labels_from_row,
    open_text,
    raster_record,
)

log = logging.getLogger(__name__)

SOURCE = "chexpert"
CSV_SPLITS = (("train.csv", None), ("valid.csv", "test"), ("test.csv", "test"))
_STUDY = re.compile(r"(patient\d+)/(study\d+)/")


def patient_key_of(patient: str) -> str:
    """Pseudonymous key of a CheXpert patient folder name (salted hash, never the raw id)."""
    from medvl.io.dicom import hash_uid

    return hash_uid(patient, salt=f"{SOURCE}:")


def resolve_image(root: Path, rel: str) -> Path | None:
    """The image file a CSV ``Path`` names, under ``root`` or its parent; None if absent."""
    rel_path = Path(rel)
    candidates = [root / rel_path, root.parent / rel_path]
    if len(rel_path.parts) > 1:
        candidates.append(root / Path(*rel_path.parts[1:]))
    return next((c for c in candidates if c.is_file()), None)


def _view(row: dict[str, str]) -> str:
    if (row.get("Frontal/Lateral") or "").strip().lower() == "lateral":
        return "LATERAL"
    return (row.get("AP/PA") or "").strip().upper()


def _read_csv(
    csv_path: Path,
    root: Path,
    fixed_split: str | None,
    check_files: bool,
    val_fraction: float,
    seed: int,
    studies: dict[str, Study],
    result: SourceResult,
) -> None:
    with open_text(csv_path) as fh:
        reader = csv.DictReader(fh)
        if "Path" not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path}: no 'Path' column; not a CheXpert label file")
        for lineno, row in enumerate(reader, 2):
            where = f"{csv_path.name}:{lineno}"
            rel = (row.get("Path") or "").strip()
            match = _STUDY.search(rel)
            if not match:
                result.fail(where, "Path does not name patientNNNNN/studyN/<image>")
                continue
            try:
                labels = labels_from_row(row)
            except ValueError as err:
                result.fail(where, str(err))
                continue
            if check_files:
                found = resolve_image(root, rel)
                if found is None:
                    result.fail(where, "image file not found under the root")
                    continue
                try:
                    image = raster_record(found, view_position=_view(row))
                except ValueError as err:
                    result.fail(where, str(err))
                    continue
            else:
                image = ImageRecord(path=str(root.parent / rel), image_id=Path(rel).stem)
                image.view_position = _view(row)
            patient, study = match.groups()
            study_id = f"{patient}-{study}"
            image.image_id = f"{study_id}-{Path(rel).stem}"
            image.study_id = study_id
            image.patient_key = patient_key_of(patient)
            if study_id not in studies:
                split = fixed_split or split_of(
                    image.patient_key, (1.0 - val_fraction, val_fraction, 0.0), seed
                )
                studies[study_id] = Study(
                    study_id=study_id,
                    patient_key=image.patient_key,
                    source=SOURCE,
                    labels=labels,
                    split=split,
                )
            studies[study_id].images.append(image)


def load_chexpert(
    root: str | Path,
    *,
    check_files: bool = True,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_csv: str | Path | None = None,
) -> SourceResult:
    """Read a CheXpert release into Studies (one per patient study, frontal + lateral images).

    Parameters
    ----------
    root
        The release folder (holding ``train.csv``) or its parent.
    check_files
        Require each image to exist and read its size; ``False`` reads the CSVs alone (paths
        are then the CSV's, joined to the root's parent).
    val_fraction
        Share of training patients moved to ``"val"``.
    train_csv
        A training CSV elsewhere (e.g. the ``chexpert_train.csv.gz`` copy torchxrayvision
        ships); the root is still where images are looked for.

    Raises
    ------
    FileNotFoundError
        If no CheXpert CSV is found.
    """
    root = Path(root)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    result = SourceResult(source=SOURCE)
    studies: dict[str, Study] = {}
    found_any = False
    for name, fixed_split in CSV_SPLITS:
        csv_path = Path(train_csv) if (train_csv and name == "train.csv") else None
        csv_path = csv_path or find_optional(root, (name, name + ".gz"))
        if csv_path is None:
            continue
        found_any = True
        base = csv_path.parent if root in csv_path.parents else root
        _read_csv(csv_path, base, fixed_split, check_files, val_fraction, seed, studies, result)
    if not found_any:
        raise FileNotFoundError(f"{root}: no train.csv, valid.csv or test.csv found")
    result.studies = list(studies.values())
    result.log_summary(log)
    return result
