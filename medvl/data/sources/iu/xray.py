"""Indiana University chest X-ray reports (Open-i) as Study records.

The collection (Demner-Fushman et al., JAMIA 2016; CC BY-NC-ND 4.0) holds 3,955 de-identified
reports of chest radiographs with 7,470 images. torchxrayvision ships the reports as
``NLMCXR_reports.tgz`` (one XML per report: sections, radiologist-coded MeSH "major" terms,
NLM's "automatic" terms, and the ids of the report's images) and the images' DICOM headers;
the original Open-i archive (a ``.tgz`` or an unpacked folder of XML files) reads the same way.

Each report becomes one :class:`~medvl.data.records.Study`:

* ``sections`` / ``report_text``: the report's sections as written (de-identification tokens
  ``XXXX`` kept; :func:`medvl.io.reports.clean_model_text` removes them for models);
* ``mesh``: the MeSH major terms; ``labels``: CheXpert-14 labels from those terms through the
  documented table (``label_source="mesh"``, default) or from the rule-based text labeler run
  on findings + impression (``label_source="labeler"``);
* ``images``: one ImageRecord per image id, with view position and acquisition facts from the
  header table (``path`` is set only when ``image_root`` holds the image files);
* ``patient_key``: ``"iu-<report id>"``. De-identification removed any link between reports,
  so each report stands for its own patient; splits are by this key, hence by report.
"""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from medvl.data.records import ImageRecord, Study, assign_splits
from medvl.data.sources.assets import IU_REPORTS, asset_path
from medvl.data.sources.common import SourceResult
from medvl.data.sources.iu.headers import (
    IUHeader,
    ViewSource,
    header_image_id,
    load_header_table,
    load_tsne_views,
    resolve_view,
)
from medvl.data.sources.iu.mesh import MeshMapping, default_mapping
from medvl.io.reports import SECTION_NAMES, IUReport, parse_iu_report

log = logging.getLogger(__name__)

SOURCE = "iu_xray"
LabelSource = Literal["mesh", "labeler"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
_REPORT_NUMBER = re.compile(r"(\d+)")


def _report_order(name: str) -> tuple[int, str]:
    """Sort key: the report number (``CXR12`` before ``CXR100``), then the name."""
    match = _REPORT_NUMBER.search(Path(name).stem)
    return (int(match.group(1)) if match else -1, name)


def _xml_sources(source: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (name, XML bytes) from a ``.tgz`` archive or a folder of XML files, in report order."""
    if source.is_dir():
        for path in sorted(source.rglob("*.xml"), key=lambda p: _report_order(p.name)):
            yield str(path), path.read_bytes()
        return
    with tarfile.open(source, "r:*") as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")]
        for member in sorted(members, key=lambda m: _report_order(m.name)):
            handle = archive.extractfile(member)
            if handle is not None:
                yield f"{source.name}:{member.name}", handle.read()


def read_iu_reports(reports_tgz: str | Path | None = None) -> tuple[list[IUReport], SourceResult]:
    """Parse every report XML; return the reports and a result holding the failures.

    Parameters
    ----------
    reports_tgz
        ``NLMCXR_reports.tgz`` or a folder of report XML files; the copy shipped with
        torchxrayvision by default.
    """
    source = asset_path(IU_REPORTS, reports_tgz)
    result = SourceResult(source=SOURCE)
    reports: list[IUReport] = []
    try:
        for name, xml in _xml_sources(source):
            try:
                report = parse_iu_report(xml)
            except ValueError as err:
                result.fail(name, str(err))
                continue
            if not report.report_id:
                result.fail(name, "report XML has no <uId id=...>")
                continue
            reports.append(report)
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"{source}: not a readable report archive ({err})") from None
    return reports, result


def report_text(sections: dict[str, str]) -> str:
    """The whole report as ``HEADING: text`` lines in canonical section order."""
    order = ("preamble", *SECTION_NAMES, "other")
    lines = []
    for name in order:
        if sections.get(name):
            heading = "" if name == "preamble" else f"{name.upper()}: "
            lines.append(f"{heading}{sections[name]}")
    return "\n".join(lines)


def _find_image(image_root: Path | None, header: IUHeader | None, image_id: str) -> str:
    if image_root is None:
        return ""
    names = [image_id + s for s in IMAGE_SUFFIXES]
    if header is not None and header.dicom_filename:
        names.append(header.dicom_filename)
    for name in names:
        if (image_root / name).is_file():
            return str(image_root / name)
    return ""


def _image_record(
    image_id: str, report_id: str, patient_key: str, header: IUHeader | None, view: str, path: str
) -> ImageRecord:
    record = ImageRecord(path=path, image_id=image_id, study_id=report_id, patient_key=patient_key)
    record.view_position = view
    if header is not None:
        record.modality = header.modality
        record.photometric = header.photometric
        record.rows, record.columns = header.rows, header.columns
        record.bits_stored = header.bits_stored
        record.pixel_spacing = header.pixel_spacing or header.imager_pixel_spacing
    return record


def _labels(report: IUReport, label_source: LabelSource, mapping: MeshMapping, closed_world: bool):
    if label_source == "mesh":
        return mapping.labels(report.mesh_major, closed_world=closed_world)
    from medvl.io.labeler import label_report

    parts = [report.sections.get(k, "") for k in ("findings", "impression")]
    text = " ".join(p for p in parts if p) or report_text(report.sections)
    return label_report(text)


def load_iu(
    reports_tgz: str | Path | None = None,
    metadata_csv: str | Path | None = None,
    *,
    label_source: LabelSource = "mesh",
    view_source: ViewSource = "tsne+header",
    closed_world: bool = True,
    tsne_csv: str | Path | None = None,
    image_root: str | Path | None = None,
    mapping: MeshMapping | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> SourceResult:
    """Read the IU collection into Studies (see the module docstring for every field).

    Reports that do not parse and image ids without a header row are recorded as failures
    (the image is kept, with an empty view unless the t-SNE call has one).
    """
    if label_source not in ("mesh", "labeler"):
        raise ValueError(f"label_source must be 'mesh' or 'labeler', got {label_source!r}")
    if view_source not in ("tsne+header", "header", "tsne"):
        raise ValueError(f"view_source must be tsne+header, header or tsne, got {view_source!r}")
    reports, result = read_iu_reports(reports_tgz)
    headers = {h.image_id: h for h in load_header_table(metadata_csv)}
    tsne = load_tsne_views(tsne_csv) if view_source != "header" else {}
    mapping = mapping or default_mapping()
    root = Path(image_root) if image_root is not None else None
    for report in reports:
        patient_key = f"iu-{report.report_id}"
        images = []
        for image_id in report.image_ids:
            header = headers.get(image_id) or headers.get(header_image_id(image_id))
            if header is None:
                result.fail(image_id, "no row in the DICOM header table; view and size unknown")
            header_view = header.view_position if header is not None else ""
            call = tsne.get(image_id) or tsne.get(header_image_id(image_id), "")
            view = resolve_view(header_view, call, view_source)
            path = _find_image(root, header, image_id)
            images.append(
                _image_record(image_id, report.report_id, patient_key, header, view, path)
            )
        result.studies.append(
            Study(
                study_id=report.report_id,
                patient_key=patient_key,
                source=SOURCE,
                report_text=report_text(report.sections),
                sections=dict(report.sections),
                labels=_labels(report, label_source, mapping, closed_world),
                mesh=list(report.mesh_major),
                images=images,
            )
        )
    assign_splits(result.studies, fractions, seed)
    result.log_summary(log)
    return result


def load_iu_studies(
    reports_tgz: str | Path | None = None, metadata_csv: str | Path | None = None, **kwargs
) -> list[Study]:
    """The IU Studies only (failures are logged); keyword arguments as in :func:`load_iu`."""
    return load_iu(reports_tgz, metadata_csv, **kwargs).studies
