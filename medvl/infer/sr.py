"""A DICOM Structured Report (TID 1500 measurement report, via highdicom) of findings.

Each eligible image gets one measurement group per finding: the probability as a unitless
measurement and the thresholded decision as a qualitative evaluation (present / absent), with
the source image referenced and the model named as the observing device and algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medvl.infer.codes import (
    ABSENT,
    CHEST_XRAY_PROCEDURE,
    PRESENT,
    PROBABILITY,
    UNITLESS,
    coding_scheme_identification,
    finding_code,
    uses_local_scheme,
)
from medvl.infer.result import StudyResult
from medvl.infer.seg import MANUFACTURER, algorithm_version

SR_SERIES_DESCRIPTION = "medvl AI findings (not for diagnosis)"


def findings_algorithm(result: StudyResult) -> str:
    """The findings algorithm's name: zero-shot prompts, or a fine-tuned head."""
    return "medvl fine-tuned findings" if result.model.head_sha256 else "medvl zero-shot findings"


def build_findings_report(
    result: StudyResult,
    sources: Mapping[str, Dataset],
    series_number: int = 901,
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR holding every image's finding probabilities and decisions.

    Parameters
    ----------
    result
        The study result; its images name their source by ``sop_uid_hash``.
    sources
        The source datasets keyed by ``sop_uid_hash`` (headers suffice; no pixels needed).
    """
    if not result.images:
        raise ValueError("no analysed images to report")
    name = findings_algorithm(result)
    version = algorithm_version(result.model.aligner_sha256)
    algorithm = hd.sr.AlgorithmIdentification(name=name, version=version)
    observation_context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(), name="medvl", model_name=name
            ),
        )
    )
    groups = []
    for image in result.images:
        source = sources[image.sop_uid_hash]
        source_ref = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
        for score in image.findings:
            code = finding_code(score.finding)
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=generate_uid(), identifier=f"{score.finding} {image.sop_uid_hash}"[:64]
                    ),
                    finding_type=code,
                    algorithm_id=algorithm,
                    source_images=[source_ref],
                    measurements=[
                        hd.sr.Measurement(
                            name=PROBABILITY, value=float(score.probability), unit=UNITLESS
                        )
                    ],
                    qualitative_evaluations=[
                        hd.sr.QualitativeEvaluation(
                            name=code, value=PRESENT if score.positive else ABSENT
                        )
                    ],
                )
            )
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=CHEST_XRAY_PROCEDURE,
        imaging_measurements=groups,
    )
    evidence = [sources[image.sop_uid_hash] for image in result.images]
    report = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=SR_SERIES_DESCRIPTION,
        software_versions=version,
    )
    used = [finding_code(score.finding) for image in result.images for score in image.findings]
    if uses_local_scheme(*used):
        report.CodingSchemeIdentificationSequence = coding_scheme_identification()
    return report
