"""Pieces every dataset adapter shares: the result container, file finding, headers, labels.

An adapter reads one public dataset's layout and returns a :class:`SourceResult`: Study records
(image + report + labels), SegSample records (image + one structure's mask) and the failures it
met. Bad rows and unreadable files become failures with a reason that never holds PHI; the rest
of the dataset is still read. Report text from a user's data is scrubbed of identifiers
(:func:`scrub_studies`, :func:`medvl.io.deid.scrub_report_text`) unless the adapter's
``scrub_reports`` is set to false for a corpus that is already de-identified (MIMIC-CXR, IU).
"""

from __future__ import annotations

import gzip
import io
import logging
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from medvl.data.records import (
    Failure,
    ImageRecord,
    Label,
    SegSample,
    Study,
    image_record,
    write_manifest,
)
from medvl.findings import CHEXPERT_14
from medvl.io.deid import scrub_report_text
from medvl.io.durable import disk_full_as_error

STUDIES_MANIFEST = "studies.jsonl"
SEG_MANIFEST = "seg_samples.jsonl"
FAILURES_MANIFEST = "failures.jsonl"

# CheXpert / MIMIC-CXR label cells: "1.0" positive, "0.0" negative, "-1.0" uncertain, "" blank.
_LABEL_CELLS: dict[str, Label] = {
    "1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": None,
}  # fmt: skip


@dataclass
class SourceResult:
    """What an adapter read: studies, segmentation samples, and failures (path, reason)."""

    source: str
    studies: list[Study] = field(default_factory=list)
    seg_samples: list[SegSample] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def fail(self, path: str | Path, reason: str) -> None:
        """Record one unusable file or row and carry on."""
        self.failures.append(Failure(path=str(path), reason=reason))

    def log_summary(self, logger: logging.Logger) -> None:
        """One INFO line with the counts, and a WARNING when anything failed."""
        logger.info(
            "%s: %d studies, %d segmentation samples, %d failures",
            self.source, len(self.studies), len(self.seg_samples), len(self.failures),
        )  # fmt: skip
        if self.failures:  # paths may hold names: they stay in failures.jsonl, out of logs
            logger.warning(
                "%s: %d inputs skipped (see failures.jsonl); first reason: %s",
                self.source, len(self.failures), self.failures[0].reason,
            )  # fmt: skip

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the non-empty manifests under ``out_dir``; return ``{kind: path}``."""
        out_dir = Path(out_dir)
        written: dict[str, Path] = {}
        for kind, name, records in (
            ("studies", STUDIES_MANIFEST, self.studies),
            ("seg_samples", SEG_MANIFEST, self.seg_samples),
            ("failures", FAILURES_MANIFEST, self.failures),
        ):
            if records:
                path = out_dir / name
                with disk_full_as_error(out_dir, name, [path.with_name(name + ".tmp")]):
                    written[kind] = write_manifest(path, records)
        return written


def scrub_studies(studies: Iterable[Study]) -> int:
    """Scrub every study's report text and sections in place; return how many changed.

    Names, IDs, dates and other identifiers become placeholder tokens (``[NAME]`` ...), which
    :func:`medvl.io.reports.clean_model_text` drops before a model sees the text.
    """
    changed = 0
    for study in studies:
        text = scrub_report_text(study.report_text) if study.report_text else ""
        sections = {k: scrub_report_text(v) for k, v in study.sections.items()}
        if text != study.report_text or sections != study.sections:
            changed += 1
        study.report_text, study.sections = text, sections
    return changed


def find_file(root: Path, names: Iterable[str]) -> Path:
    """The first of ``names`` found in ``root`` itself, else anywhere below it.

    Raises
    ------
    FileNotFoundError
        Naming the root and every name looked for.
    """
    names = tuple(names)
    for name in names:
        if (root / name).is_file():
            return root / name
    for name in names:
        hits = sorted(p for p in root.rglob(name) if p.is_file())
        if hits:
            return hits[0]
    raise FileNotFoundError(f"{root}: none of {', '.join(names)} found in this folder or below")


def matched_dicoms(
    root: Path, table: Mapping[str, object], table_name: str, result: SourceResult
) -> Iterator[tuple[str, Path]]:
    """``(key, path)`` for each row of a per-image table whose DICOM (``<key>.dcm``) is under root.

    DICOMs without a row and rows without a DICOM are recorded in ``result`` as failures, so a
    partly downloaded tree still yields every image that can be used.
    """
    dicoms = {p.stem: p for p in sorted(root.rglob("*.dcm"))}
    for key, path in dicoms.items():
        if key not in table:
            result.fail(path, f"no row for this image in {table_name}")
    for key in sorted(table):
        path = dicoms.get(key)
        if path is None:
            result.fail(f"{table_name}:{key}", "table row has no DICOM file under the root")
            continue
        yield key, path


def find_optional(root: Path, names: Iterable[str]) -> Path | None:
    """Like :func:`find_file`, but None when nothing matches."""
    try:
        return find_file(root, names)
    except FileNotFoundError:
        return None


def open_text(path: str | Path) -> IO[str]:
    """Open a CSV or text file for reading; ``.gz`` and single-file ``.zip`` are unpacked.

    Raises
    ------
    ValueError
        If a ``.zip`` holds more or less than one file.
    """
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    if path.suffix == ".zip":
        archive = zipfile.ZipFile(path)
        members = [n for n in archive.namelist() if not n.endswith("/")]
        if len(members) != 1:
            archive.close()
            raise ValueError(f"{path}: expected one file in the archive, found {len(members)}")
        member = archive.open(members[0])
        archive.close()  # the open member keeps the file until it is closed itself
        return io.TextIOWrapper(member, encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def parse_label(cell: str | None) -> Label:
    """A CheXpert-style label cell as 1 / 0 / -1 / None.

    Raises
    ------
    ValueError
        For any other text (the caller records the row as a failure).
    """
    text = (cell or "").strip()
    if text not in _LABEL_CELLS:
        raise ValueError(f"label cell {text!r} is not 1.0, 0.0, -1.0 or blank")
    return _LABEL_CELLS[text]


def labels_from_row(row: Mapping[str, str | None], findings: Iterable[str] = CHEXPERT_14) -> dict:
    """CheXpert-14 labels from a CSV row; findings without a column are left out."""
    return {name: parse_label(row[name]) for name in findings if name in row}


def read_header(path: str | Path, image_id: str = "") -> ImageRecord:
    """Safe header metadata of one DICOM file, validated but without decoding pixels.

    The header goes through :func:`medvl.io.dicom.read_dicom` (``decode=False``), so a file it
    would reject later is rejected here. UIDs are kept only as salted hashes; ``patient_key`` is
    the hashed PatientID (the hashed StudyInstanceUID when the file has none).

    Raises
    ------
    ValueError
        If the file is not a usable DICOM image (message names the file, never PHI).
    """
    import pydicom

    from medvl.io.dicom import DicomReadError, hash_uid, read_dicom

    path = Path(path)
    try:
        image = read_dicom(path, decode=False)
        ids = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except DicomReadError as err:
        raise ValueError(str(err)) from None
    patient_key = hash_uid(str(ids.get("PatientID", "") or "")) or image.study_uid_hash
    return image_record(image, str(path), image_id or path.stem, patient_key)


def raster_record(path: str | Path, image_id: str = "", view_position: str = "") -> ImageRecord:
    """An ImageRecord for a JPG/PNG file, reading only its header for the size.

    Raises
    ------
    ValueError
        If the file is missing or not an image PIL can open.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            cols, rows = im.size
            mode = im.mode
    except (OSError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image ({type(err).__name__})") from None
    return ImageRecord(
        path=str(path),
        image_id=image_id or path.stem,
        modality="",
        view_position=view_position.upper(),
        photometric="MONOCHROME2" if mode in ("L", "I", "I;16", "F") else "RGB",
        rows=rows,
        columns=cols,
    )


def write_mask_png(path: str | Path, mask: np.ndarray) -> Path:
    """Write a binary mask as an 8-bit PNG (0 outside, 255 inside); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8)).save(path)
    return path


def add_mask_sample(
    result: SourceResult,
    record: ImageRecord,
    mask: np.ndarray,
    mask_path: Path,
    structure: str,
    split: str,
) -> None:
    """Write ``mask`` as a PNG, attach it to ``record`` and add its SegSample to ``result``."""
    written = write_mask_png(mask_path, mask)
    record.masks[structure] = str(written)
    result.seg_samples.append(
        SegSample(
            image_path=record.path,
            mask_path=str(written),
            structure=structure,
            image_id=record.image_id,
            patient_key=record.patient_key,
            pixel_spacing=record.pixel_spacing,
            split=split,
        )
    )
