"""Records that flow between ingest, dataset sources, training and inference.

A manifest is a JSONL file, one record per line (Parquet when the path ends in ``.parquet`` and
pyarrow is installed). Records hold only pseudonymous keys: ``patient_key`` is a salted hash
or a synthetic id, never a PatientID, so a manifest can be shared inside a research group.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from medvl.io.dicom import DicomImage

R = TypeVar("R")

Label = int | None  # 1 present, 0 negated, -1 uncertain, None not mentioned (CheXpert values)
SPLITS = ("train", "val", "test")


@dataclass
class ImageRecord:
    """One image file and its safe header metadata (no PHI)."""

    path: str
    image_id: str
    study_id: str = ""
    patient_key: str = ""
    modality: str = ""
    view_position: str = ""
    photometric: str = ""
    rows: int = 0
    columns: int = 0
    frames: int = 1
    bits_stored: int = 0
    pixel_spacing: tuple[float, float] | None = None
    transfer_syntax: str = ""
    sop_uid_hash: str = ""
    series_uid_hash: str = ""
    study_uid_hash: str = ""
    content_hash: str = ""
    masks: dict[str, str] = field(default_factory=dict)
    sex: str = ""  # M / F / O from PatientSex; "" unknown
    age_band: str = ""  # 10-year band of PatientAge ("40-49", "90+"); never a birth date
    manufacturer: str = ""  # the device maker, a stand-in for site in subgroup metrics


def age_band(age: str) -> str:
    """The 10-year band of a DICOM age string (``045Y``, ``006M``, ``010W``, ``003D``).

    Ages of 90 and over collapse into ``90+`` (as HIPAA Safe Harbor asks); anything that is
    not a valid age string gives ``""``.
    """
    text = str(age or "").strip().upper()
    units = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        return ""
    years = int(int(text[:-1]) / units[text[-1]])
    if years >= 90:
        return "90+"
    low = years // 10 * 10
    return f"{low}-{low + 9}"


def header_demographics(sex: str, age: str, manufacturer: str) -> dict[str, str]:
    """Subgroup fields of a header: ``sex`` (M/F/O), ``age_band``, ``manufacturer``."""
    code = str(sex or "").strip().upper()
    return {
        "sex": code if code in ("M", "F", "O") else "",
        "age_band": age_band(age),
        "manufacturer": " ".join(str(manufacturer or "").split()),
    }


def image_record(
    image: DicomImage,
    path: str,
    image_id: str,
    patient_key: str,
    content_hash: str = "",
    demographics: dict[str, str] | None = None,
) -> ImageRecord:
    """The manifest record of a header from ``read_dicom``: safe fields only, view in upper case.

    ``demographics`` are the :func:`header_demographics` of the file, if read.
    """
    return ImageRecord(
        path=path,
        image_id=image_id,
        study_id=image.study_uid_hash,
        patient_key=patient_key,
        modality=image.modality,
        view_position=image.view_position.strip().upper(),
        photometric=image.photometric,
        rows=image.rows,
        columns=image.columns,
        frames=image.frames,
        bits_stored=image.bits_stored,
        pixel_spacing=image.pixel_spacing,
        transfer_syntax=image.transfer_syntax,
        sop_uid_hash=image.sop_uid_hash,
        series_uid_hash=image.series_uid_hash,
        study_uid_hash=image.study_uid_hash,
        content_hash=content_hash,
        **(demographics or {}),
    )


@dataclass
class Study:
    """One imaging study with its report, labels and images."""

    study_id: str
    patient_key: str
    source: str
    report_text: str = ""
    sections: dict[str, str] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)
    mesh: list[str] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    split: str = ""

    @property
    def model_text(self) -> str:
        """The report text a text tower sees: findings then impression, else the whole report."""
        parts = [self.sections.get(k, "") for k in ("findings", "impression")]
        text = " ".join(p for p in parts if p)
        return text or self.report_text


@dataclass
class ImageReportPair:
    """An image paired with its study's report text and labels: the unit of contrastive training."""

    image: ImageRecord
    study_id: str
    patient_key: str
    text: str
    labels: dict[str, Label] = field(default_factory=dict)
    split: str = ""


@dataclass
class SegSample:
    """One image with one structure's ground-truth mask, for SAM decoder training."""

    image_path: str
    mask_path: str
    structure: str
    image_id: str = ""
    patient_key: str = ""
    pixel_spacing: tuple[float, float] | None = None
    split: str = ""


@dataclass
class Failure:
    """A file a batch job could not use, and why (the reason never holds PHI)."""

    path: str
    reason: str


def _from_plain(cls: type[R], data: dict[str, Any]) -> R:
    """Rebuild a record dataclass (with nested ImageRecords) from its JSON form."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name == "images":
            value = [_from_plain(ImageRecord, v) for v in value]
        elif f.name == "image":
            value = _from_plain(ImageRecord, value)
        elif f.name == "pixel_spacing" and value is not None:
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def manifest_line(record: Any) -> str:
    """One record as the JSONL line :func:`write_manifest` writes (keys sorted, newline ended).

    For writers that stream a manifest instead of handing over every record at once.
    """
    return _jsonl_line(dataclasses.asdict(record))


def _jsonl_line(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True) + "\n"


def write_manifest(path: str | Path, records: Iterable[Any]) -> Path:
    """Write records as JSONL (or Parquet for ``.parquet`` paths) atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [dataclasses.asdict(r) for r in records]
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        with tmp.open("w") as fh:
            for row in rows:
                fh.write(_jsonl_line(row))
    tmp.replace(path)
    return path


def iter_manifest(path: str | Path, cls: type[R]) -> Iterator[R]:
    """Yield records of type ``cls`` from a JSONL or Parquet manifest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for row in pq.read_table(path).to_pylist():
            yield _from_plain(cls, row)
        return
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield _from_plain(cls, json.loads(line))
            except (json.JSONDecodeError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: not a {cls.__name__} record ({err})") from None


def read_manifest(path: str | Path, cls: type[R]) -> list[R]:
    """Read a whole manifest into a list of ``cls`` records."""
    return list(iter_manifest(path, cls))


def split_of(patient_key: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> str:
    """Deterministic patient-level split: the same patient always lands in the same split.

    A hash of (seed, patient key) is mapped to [0, 1) and cut at the cumulative fractions, so
    adding patients never moves existing ones between splits.
    """
    if len(fractions) != len(SPLITS) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three numbers summing to 1, got {fractions}")
    digest = hashlib.sha256(f"{seed}:{patient_key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, frac in zip(SPLITS, fractions, strict=True):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]


def assign_splits(
    studies: Iterable[Study], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> list[Study]:
    """Set ``split`` on every study by patient (no patient in two splits); return them."""
    out = list(studies)
    for study in out:
        study.split = split_of(study.patient_key, fractions, seed)
    return out


def study_pairs(
    studies: Iterable[Study],
    views: Sequence[str] | None = ("PA", "AP"),
    split: str | None = None,
) -> list[ImageReportPair]:
    """Expand studies into image-report pairs, keeping images whose view is in ``views``.

    ``views=None`` keeps every image (laterals included).
    """
    pairs = []
    for study in studies:
        if split is not None and study.split != split:
            continue
        for image in study.images:
            if views is not None and image.view_position not in views:
                continue
            pairs.append(
                ImageReportPair(
                    image=image,
                    study_id=study.study_id,
                    patient_key=study.patient_key,
                    text=study.model_text,
                    labels=dict(study.labels),
                    split=study.split,
                )
            )
    return pairs
