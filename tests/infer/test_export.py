"""JSON, DICOM SEG and SR writers: schema-valid, re-readable, referencing the right images."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import jsonschema
import numpy as np
import pydicom
import pytest
from infer_dicom import PLANTED_ID, PLANTED_NAME

from medvl.infer.export import export_study
from medvl.infer.json_result import result_schema, result_to_json, write_result_json
from medvl.infer.result import (
    FindingScore,
    ImageResult,
    ModelIdentity,
    SegmentMask,
    SkippedFile,
    StudyResult,
)
from medvl.infer.seg import build_segmentation
from medvl.infer.spacing import (
    IMAGER_CORRECTED,
    IMAGER_UNCORRECTED,
    PIXEL_SPACING,
    physical_spacing,
)
from medvl.infer.sr import build_findings_report
from medvl.io.dicom import hash_uid


def _result(paths: list[Path]) -> tuple[StudyResult, dict[str, pydicom.Dataset]]:
    sources = {}
    images = []
    for k, path in enumerate(paths[:2]):
        ds = pydicom.dcmread(path)
        key = hash_uid(str(ds.SOPInstanceUID))
        sources[key] = ds
        mask = np.zeros((ds.Rows, ds.Columns), bool)
        mask[5:20, 4:30] = True
        images.append(
            ImageResult(
                source_path=path,
                sop_uid_hash=key,
                view_position=str(ds.ViewPosition),
                modality="CR",
                findings=[
                    FindingScore("Cardiomegaly", 0.8 - 0.5 * k, 0.5),
                    FindingScore("Pleural Effusion", 0.2 + 0.1 * k, 0.5),
                ],
                segments=[SegmentMask("lungs", mask, 0.9, (0.5, 0.5), "PixelSpacing")],
            )
        )
    study = hash_uid(str(sources[images[0].sop_uid_hash].StudyInstanceUID))
    result = StudyResult(
        study_uid_hash=study,
        model=ModelIdentity(aligner="tiny", aligner_sha256="a" * 64),
        images=images,
        skipped=[SkippedFile(paths[2], "view LL is not eligible (PA, AP)")],
        seconds=0.5,
    )
    return result, sources


def test_json_is_schema_valid_and_phi_free(cr_study: list[Path], tmp_path: Path) -> None:
    result, _ = _result(cr_study)
    path = write_result_json(result, tmp_path / "out" / "result.json")
    text = path.read_text()
    doc = json.loads(text)
    jsonschema.validate(doc, result_schema())
    assert PLANTED_NAME not in text and PLANTED_ID not in text and "ACC778899" not in text
    by_name = {f["finding"]: f for f in doc["study_findings"]}
    assert by_name["Cardiomegaly"]["probability"] == pytest.approx(0.8)
    assert by_name["Cardiomegaly"]["positive"] is True
    assert by_name["Pleural Effusion"]["probability"] == pytest.approx(0.3)
    assert by_name["Pleural Effusion"]["positive"] is False
    seg = doc["images"][0]["segments"][0]
    assert seg["pixels"] == 15 * 26 and seg["bbox"] == [4, 5, 29, 19]
    assert seg["area_mm2"] == pytest.approx(15 * 26 * 0.25)
    assert seg["spacing_source"] == "PixelSpacing"
    assert doc["skipped"][0]["item"] == hash_uid(str(cr_study[2]))
    assert not any(p.name in text or str(p.parent) in text for p in cr_study)  # no names


def test_identifiers_only_on_request(cr_study: list[Path]) -> None:
    result, sources = _result(cr_study)
    doc = result_to_json(result, include_identifiers=True)
    assert doc["identifiers"]["PatientID"] == PLANTED_ID
    assert set(doc["identifiers"]["SOPInstanceUIDs"]) == set(sources)
    assert doc["identifiers"]["files"][hash_uid(str(cr_study[2]))] == str(cr_study[2])


def test_invalid_result_is_rejected(cr_study: list[Path]) -> None:
    result, _ = _result(cr_study)
    result.images[0].findings[0].probability = 1.5
    with pytest.raises(jsonschema.ValidationError):
        result_to_json(result)


def test_seg_round_trip_references_source(cr_study: list[Path], tmp_path: Path) -> None:
    result, sources = _result(cr_study)
    image = result.images[0]
    source = sources[image.sop_uid_hash]
    seg = build_segmentation(source, image.segments, "c" * 64)
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    again = hd.seg.segread(path)
    referenced = again.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    pixels = again.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(source.SOPInstanceUID)], segment_numbers=[1]
    )
    assert pixels.shape == (1, source.Rows, source.Columns, 1)
    assert np.array_equal(pixels[0, :, :, 0].astype(bool), image.segments[0].mask)
    raw = pydicom.dcmread(path)
    assert raw.SegmentSequence[0].SegmentLabel == "lungs"
    assert raw.PatientOrientation == source.PatientOrientation
    assert raw.SeriesDescription.startswith("medvl")
    algorithm = raw.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "medvl SAM segmentation"
    assert algorithm.AlgorithmVersion.endswith("sha256:" + "c" * 12)
    assert "PixelMeasuresSequence" not in raw.SharedFunctionalGroupsSequence[0]  # no slice
    assert "CodingSchemeIdentificationSequence" not in raw  # lungs: SNOMED only
    assert raw.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"


def test_seg_rejects_wrong_shape(cr_study: list[Path]) -> None:
    result, sources = _result(cr_study)
    image = result.images[0]
    bad = SegmentMask("lungs", np.zeros((3, 3), bool), 0.5)
    with pytest.raises(ValueError, match=r"mask for lungs is \(3, 3\)"):
        build_segmentation(sources[image.sop_uid_hash], [bad])


def test_sr_round_trip(cr_study: list[Path], tmp_path: Path) -> None:
    result, sources = _result(cr_study)
    sr = build_findings_report(result, sources)
    path = tmp_path / "sr.dcm"
    sr.save_as(path)
    again = hd.sr.srread(path)
    evidence = {
        inst.ReferencedSOPInstanceUID
        for study in again.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for inst in series.ReferencedSOPSequence
    }
    assert evidence == {str(ds.SOPInstanceUID) for ds in sources.values()}
    groups = again.content.get_image_measurement_groups()
    assert len(groups) == 4
    probs = sorted(float(m.value) for g in groups for m in g.get_measurements())
    assert probs == pytest.approx(sorted([0.8, 0.2, 0.3, 0.3]))
    decisions = sorted(e.value.meaning for g in groups for e in g.get_qualitative_evaluations())
    assert decisions == ["Absent", "Absent", "Absent", "Present"]
    # SR and SEG are clinical objects filed with the patient: they carry its patient module.
    assert again.PatientID == PLANTED_ID
    assert again.SeriesDescription.startswith("medvl")
    assert "CodingSchemeIdentificationSequence" not in again  # SNOMED and DCM codes only
    result.images[0].findings[0].finding = "Lung Opacity"  # a 99MEDVL code: declared
    (scheme,) = build_findings_report(result, sources).CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == "99MEDVL"
    assert "/" not in str(again.ContentSequence)  # the algorithm is named, not a path


def test_json_is_written_last_and_atomically(cr_study: list[Path], tmp_path: Path) -> None:
    result, _ = _result(cr_study)
    out = tmp_path / "out"
    written = export_study(result, out)
    json_time = (out / "result.json").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= json_time for p in written) and len(written) == 3
    assert not list(out.glob(".*tmp"))


def test_spacing_prefers_pixel_spacing_then_corrects_imager_spacing() -> None:
    ds = pydicom.Dataset()
    assert physical_spacing(ds) == (None, None)
    ds.ImagerPixelSpacing = [0.2, 0.2]
    assert physical_spacing(ds) == ((0.2, 0.2), IMAGER_UNCORRECTED)
    ds.EstimatedRadiographicMagnificationFactor = 1.1
    spacing, source = physical_spacing(ds)
    assert spacing == pytest.approx((0.2 / 1.1, 0.2 / 1.1)) and source == IMAGER_CORRECTED
    area = SegmentMask("lungs", np.ones((10, 10), bool), 1.0, spacing).area_mm2
    assert area == pytest.approx(100 * 0.04 / 1.21)  # 21% smaller than the detector-plane area
    ds.PixelSpacing = [0.15, 0.15]
    assert physical_spacing(ds) == ((0.15, 0.15), PIXEL_SPACING)


def test_sources_missing_type2_attributes_still_export(cr_study: list[Path], tmp_path) -> None:
    for path in cr_study:
        ds = pydicom.dcmread(path)
        del ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName, ds.AccessionNumber
        ds.save_as(path)
    result, _ = _result(cr_study)
    written = export_study(result, tmp_path / "out")
    seg = pydicom.dcmread(next(p for p in written if p.name.startswith("seg_")))
    assert seg.PatientBirthDate == "" and seg.AccessionNumber == ""
