"""Real DICOM headers of the Indiana University chest X-ray images, PHI columns dropped.

torchxrayvision ships ``nlmcxr_dicom_metadata.csv.gz``: one row per IU image (7,469 rows, 176
header attributes). The table is read through an allowlist of acquisition attributes, so
identifying columns (PatientID, PatientName, BirthDate, AccessionNumber, dates, UIDs) never
leave this module. The rows serve two uses: view positions of the real studies, and a realistic
distribution of acquisition headers for the phantom generator to sample from.

View positions in the header are missing for a third of the images and sometimes wrong
(laterals labelled PA). torchxrayvision also ships ``nlmcxr_tsne_pa.csv.gz``, frontal / lateral
calls for 3,851 images derived from a t-SNE embedding of the pixels; :func:`resolve_view`
combines both.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medvl.data.sources.assets import IU_DICOM_METADATA, IU_TSNE_VIEWS, asset_path
from medvl.data.sources.common import open_text

ViewSource = Literal["tsne+header", "header", "tsne"]
FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LL", "RL", "LATERAL")
_VIEW_ALIASES = {"LARGE LATERAL": "LATERAL", "L": "LATERAL", "LAT": "LATERAL"}


@dataclass(frozen=True)
class IUHeader:
    """Acquisition attributes of one IU image (no identifying attribute is kept)."""

    image_id: str
    report_id: str
    view_position: str
    modality: str
    photometric: str
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None
    imager_pixel_spacing: tuple[float, float] | None
    rescale_slope: float | None
    rescale_intercept: float | None
    rescale_type: str
    window_center: float | None
    window_width: float | None
    presentation_lut_shape: str
    sop_class_uid: str
    body_part: str
    manufacturer: str
    detector_manufacturer: str
    detector_model: str
    kvp: float | None
    dicom_filename: str


HEADER_COLUMNS = frozenset({
    "imageid", "View Position", "Modality", "Photometric Interpretation", "Bits Allocated",
    "Bits Stored", "High Bit", "Pixel Representation", "Rows", "Columns", "Pixel Spacing",
    "Imager Pixel Spacing", "Rescale Slope", "Rescale Intercept", "Rescale Type", "Window Center",
    "Window Width", "Presentation LUT Shape", "SOP Class UID", "Body Part Examined",
    "Manufacturer", "Detector Manufacturer Name", "Detector Manufacturer's Model Name", "KVP",
    "filename",
})  # fmt: skip
_CXR1_ALIAS = re.compile(r"^(CXR\d+)_\d+_(IM-)")


def normalize_view(value: str | None) -> str:
    """DICOM ViewPosition spelling used across medvl: PA, AP, LL, RL, LATERAL, or ``""``."""
    text = " ".join(str(value or "").upper().split())
    if text in ("", "NAN", "NONE"):
        return ""
    return _VIEW_ALIASES.get(text, text)


def _values(cell: str) -> list[str]:
    """A header cell as a list of strings: ``"['0.15', '0.15']"`` or ``"16384"``.

    Multi-valued attributes were written as Python list literals of quoted strings; splitting
    on commas is enough for the numeric and code-string attributes read here.
    """
    text = cell.strip()
    if text.startswith("[") and text.endswith("]"):
        return [v.strip().strip("'\"") for v in text[1:-1].split(",") if v.strip()]
    return [text] if text else []


def _float(cell: str) -> float | None:
    values = _values(cell)
    try:
        return float(values[0]) if values else None
    except ValueError:
        return None


def _int(cell: str) -> int:
    value = _float(cell)
    return int(value) if value is not None else 0


def _pair(cell: str) -> tuple[float, float] | None:
    try:
        values = [float(v) for v in _values(cell)]
    except ValueError:
        return None
    return (values[0], values[1]) if len(values) == 2 and values[0] > 0 and values[1] > 0 else None


def _text(cell: str) -> str:
    return cell.strip() if cell.strip().lower() != "nan" else ""


def header_image_id(image_id: str) -> str:
    """The header table's spelling of an image id from the report XML.

    The XML of report CXR1 names its images ``CXR1_1_IM-0001-3001``; the header table (and the
    Open-i image archive) ``CXR1_IM-0001-3001``.
    """
    return _CXR1_ALIAS.sub(r"\1_\2", image_id)


def report_id_of(image_id: str) -> str:
    """``"CXR1000_IM-0003-2001"`` -> ``"CXR1000"`` (the report an IU image belongs to)."""
    return image_id.split("_", 1)[0]


def _header_row(row: dict[str, str]) -> IUHeader:
    image_id = row["imageid"].strip()
    return IUHeader(
        image_id=image_id,
        report_id=report_id_of(image_id),
        view_position=normalize_view(row.get("View Position")),
        modality=_text(row.get("Modality", "")),
        photometric=_text(row.get("Photometric Interpretation", "")),
        bits_allocated=_int(row.get("Bits Allocated", "")),
        bits_stored=_int(row.get("Bits Stored", "")),
        high_bit=_int(row.get("High Bit", "")),
        pixel_representation=_int(row.get("Pixel Representation", "")),
        rows=_int(row.get("Rows", "")),
        columns=_int(row.get("Columns", "")),
        pixel_spacing=_pair(row.get("Pixel Spacing", "")),
        imager_pixel_spacing=_pair(row.get("Imager Pixel Spacing", "")),
        rescale_slope=_float(row.get("Rescale Slope", "")),
        rescale_intercept=_float(row.get("Rescale Intercept", "")),
        rescale_type=_text(row.get("Rescale Type", "")),
        window_center=_float(row.get("Window Center", "")),
        window_width=_float(row.get("Window Width", "")),
        presentation_lut_shape=_text(row.get("Presentation LUT Shape", "")),
        sop_class_uid=_text(row.get("SOP Class UID", "")),
        body_part=_text(row.get("Body Part Examined", "")),
        manufacturer=_text(row.get("Manufacturer", "")),
        detector_manufacturer=_text(row.get("Detector Manufacturer Name", "")),
        detector_model=_text(row.get("Detector Manufacturer's Model Name", "")),
        kvp=_float(row.get("KVP", "")),
        dicom_filename=Path(_text(row.get("filename", ""))).name,
    )


def load_header_table(metadata_csv: str | Path | None = None) -> list[IUHeader]:
    """Per-image acquisition headers of the IU collection, identifying columns dropped.

    Parameters
    ----------
    metadata_csv
        ``nlmcxr_dicom_metadata.csv(.gz)``; the copy shipped with torchxrayvision by default.

    Raises
    ------
    ValueError
        If the file has no ``imageid`` column.
    """
    path = asset_path(IU_DICOM_METADATA, metadata_csv)
    with open_text(path) as fh:
        reader = csv.reader(fh)
        names = next(reader, [])
        if "imageid" not in names:
            raise ValueError(f"{path}: no 'imageid' column; not the IU DICOM metadata table")
        # Only allowlisted columns are ever looked at; identifying ones are never read.
        wanted = {n: i for i, n in enumerate(names) if n in HEADER_COLUMNS}
        rows = []
        for cells in reader:
            row = {n: cells[i] if i < len(cells) else "" for n, i in wanted.items()}
            if row["imageid"].strip():
                rows.append(_header_row(row))
    return sorted(rows, key=lambda h: h.image_id)


def load_tsne_views(tsne_csv: str | Path | None = None) -> dict[str, str]:
    """Image id -> ``"PA"`` or ``"LATERAL"`` from torchxrayvision's t-SNE view calls."""
    path = asset_path(IU_TSNE_VIEWS, tsne_csv)
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        if not {"imageid", "tsne-view"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs columns imageid and tsne-view")
        return {r["imageid"].strip(): normalize_view(r["tsne-view"]) for r in reader}


def resolve_view(header_view: str, tsne_view: str, source: ViewSource = "tsne+header") -> str:
    """One image's view position from the header value and the t-SNE call.

    ``"tsne+header"``: the t-SNE call where there is one (it corrects laterals labelled PA), but
    a header AP / LL / RL is kept when it agrees with the call's frontal / lateral class, since
    the t-SNE calls know only PA and lateral; the header value where there is no call.
    """
    if source == "header":
        return header_view
    if source == "tsne":
        return tsne_view
    if not tsne_view:
        return header_view
    same_class = (tsne_view in FRONTAL_VIEWS and header_view in FRONTAL_VIEWS) or (
        tsne_view in LATERAL_VIEWS and header_view in LATERAL_VIEWS
    )
    return header_view if same_class else tsne_view
