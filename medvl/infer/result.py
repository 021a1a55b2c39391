"""The result of running medvl on one study, before it is written as JSON, SEG or SR.

Keys are hashes of DICOM UIDs, not the UIDs themselves; files are never named (file and folder
names often carry accession numbers or patient names). The source paths and identifiers needed
to write DICOM objects stay in memory only (``ImageResult.source_path``), never in the JSON
unless the user asks for identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvl.infer.volume_result import SeriesSegmentation
from medvl.io.dicom import hash_uid

SCHEMA_VERSION = "1.3"


@dataclass
class FindingScore:
    """One finding's probability on one image (or study), and the decision at its threshold."""

    finding: str
    probability: float
    threshold: float

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold


@dataclass
class SegmentMask:
    """One segmented structure on one image; the mask stays in memory for the SEG writer."""

    structure: str
    mask: np.ndarray  # bool (rows, columns) in the source image's geometry
    score: float  # the SAM IoU head's predicted IoU
    pixel_spacing: tuple[float, float] | None = None  # mm at the patient (see infer.spacing)
    spacing_source: str | None = None  # which attribute(s) the spacing came from

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())

    @property
    def area_mm2(self) -> float | None:
        if self.pixel_spacing is None:
            return None
        return float(self.pixels * self.pixel_spacing[0] * self.pixel_spacing[1])

    @property
    def bbox(self) -> list[int] | None:
        """[x0, y0, x1, y1] inclusive pixel box of the mask, or None when empty."""
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return None
        return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


@dataclass
class ImageResult:
    """Everything predicted for one eligible image."""

    source_path: Path
    sop_uid_hash: str
    view_position: str
    modality: str
    findings: list[FindingScore] = field(default_factory=list)
    segments: list[SegmentMask] = field(default_factory=list)


@dataclass
class SkippedFile:
    """A file of the study that was not analysed, and why (no PHI in the reason).

    ``key`` is what the JSON shows: the SOP Instance UID hash when the file has one, else a hash
    of its path; ``path`` stays in memory (and in the JSON only with ``include_identifiers``).
    """

    path: Path
    reason: str
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = hash_uid(str(self.path))


@dataclass
class ModelIdentity:
    """Which weights produced a result: names and SHA-256 of every loaded artefact."""

    aligner: str
    aligner_sha256: str
    adapter_sha256: str | None = None
    head_sha256: str | None = None  # a fine-tuned findings head, when one replaced the prompts
    sam: str | None = None
    sam_sha256: str | None = None


@dataclass
class StudyResult:
    """One study's findings (per image and per study), segmentations and skipped files."""

    study_uid_hash: str
    model: ModelIdentity
    images: list[ImageResult] = field(default_factory=list)
    series: list[SeriesSegmentation] = field(default_factory=list)  # CT/MR volumes segmented
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0

    def study_findings(self) -> list[FindingScore]:
        """Study-level score per finding: the maximum over the study's eligible images."""
        best: dict[str, FindingScore] = {}
        for image in self.images:
            for score in image.findings:
                if score.finding not in best or score.probability > best[score.finding].probability:
                    best[score.finding] = score
        return [FindingScore(s.finding, s.probability, s.threshold) for s in best.values()]
