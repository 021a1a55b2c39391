"""Study results as JSON with a versioned schema (``medvl/resources/result_schema.json``).

The JSON names images and skipped files by opaque keys (UID or path hashes), never by file or
folder name. Patient and study identifiers, and the key-to-file map, are added only when the
caller asks (``include_identifiers=True``), read from the source files at write time. The file
is written through a temporary file and a rename, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pydicom

from medvl.infer.result import SCHEMA_VERSION, FindingScore, StudyResult
from medvl.infer.volume_result import SeriesSegmentation


@cache
def result_schema() -> dict[str, Any]:
    """The JSON schema every result document validates against."""
    text = resources.files("medvl.resources").joinpath("result_schema.json").read_text()
    return json.loads(text)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    """A validator built once: ``jsonschema.validate`` re-checks the schema on every call."""
    return jsonschema.Draft202012Validator(result_schema())


def _finding(score: FindingScore) -> dict[str, Any]:
    return {
        "finding": score.finding,
        "probability": round(float(score.probability), 6),
        "threshold": float(score.threshold),
        "positive": score.positive,
    }


def _series(series: SeriesSegmentation) -> dict[str, Any]:
    return {
        "series": series.series_uid_hash,
        "modality": series.modality,
        "slices": series.slices,
        "spacing_mm": [round(float(v), 6) for v in series.spacing],
        "segments": [
            {
                "structure": seg.structure,
                "voxels": seg.voxels,
                "volume_ml": seg.volume_ml,
                "slices": [min(seg.slices), max(seg.slices)] if seg.slices else None,
                "prompt_slices": list(seg.prompt_slices),
                "score": round(float(seg.score), 6),
            }
            for seg in series.segments
        ],
        "not_in_view": list(series.not_in_view),
    }


def _identifiers(result: StudyResult) -> dict[str, Any]:
    out: dict[str, Any] = {"SOPInstanceUIDs": {}, "files": {}}
    for image in result.images:
        ds = pydicom.dcmread(image.source_path, stop_before_pixels=True)
        out["StudyInstanceUID"] = str(ds.get("StudyInstanceUID", ""))
        out["PatientID"] = str(ds.get("PatientID", ""))
        out["AccessionNumber"] = str(ds.get("AccessionNumber", ""))
        out["SOPInstanceUIDs"][image.sop_uid_hash] = str(ds.SOPInstanceUID)
        out["files"][image.sop_uid_hash] = str(image.source_path)
    for skipped in result.skipped:
        out["files"][skipped.key] = str(skipped.path)
    return out


def result_to_json(result: StudyResult, include_identifiers: bool = False) -> dict[str, Any]:
    """The result as a schema-valid JSON document (a dict)."""
    study_findings = result.study_findings()
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "study": result.study_uid_hash,
        "model": {
            "aligner": result.model.aligner,
            "aligner_sha256": result.model.aligner_sha256,
            "adapter_sha256": result.model.adapter_sha256,
            "head_sha256": result.model.head_sha256,
            "sam": result.model.sam,
            "sam_sha256": result.model.sam_sha256,
        },
        "thresholds": {s.finding: float(s.threshold) for s in study_findings},
        "study_findings": [_finding(s) for s in study_findings],
        "images": [
            {
                "sop": image.sop_uid_hash,
                "view_position": image.view_position,
                "modality": image.modality,
                "findings": [_finding(s) for s in image.findings],
                "segments": [
                    {
                        "structure": seg.structure,
                        "pixels": seg.pixels,
                        "area_mm2": seg.area_mm2,
                        "spacing_source": seg.spacing_source,
                        "bbox": seg.bbox,
                        "score": round(float(seg.score), 6),
                    }
                    for seg in image.segments
                ],
            }
            for image in result.images
        ],
        "series": [_series(series) for series in result.series],
        "skipped": [{"item": s.key, "reason": s.reason} for s in result.skipped],
        "seconds": round(float(result.seconds), 4),
    }
    if include_identifiers:
        doc["identifiers"] = _identifiers(result)
    _validator().validate(doc)
    return doc


def write_result_json(
    result: StudyResult, path: str | Path, include_identifiers: bool = False
) -> Path:
    """Validate and write the result JSON; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result_to_json(result, include_identifiers), indent=2))
    os.replace(tmp, path)
    return path
