"""PACS-adjacent inference: a study in, one :class:`StudyResult` out.

Models load once (:class:`InferencePipeline` is built once per process, then called per study):
the aligner (optionally with a LoRA adapter merged in memory), its zero-shot prompt bank and
calibration, and optionally a fine-tuned SAM. Per study, every instance is header-checked,
eligible radiographs (rules in :class:`~medvl.infer.selection.EligibilityConfig`) are decoded
once, scored in batches and segmented; everything else is listed in ``skipped`` with a reason.

The SAM is a saved medvl SAM directory or a raw SAM/MedSAM checkpoint; ``sam_preprocessing``
(``sam`` or ``medsam``) overrides its image preprocessing, which otherwise is the saved SAM's own
(``sam`` for raw checkpoints), so MedSAM weights run with MedSAM's inference.

SAM needs a prompt. Without a user box, each structure in ``InferConfig.structures`` carries a
box relative to the image (x0, y0, x1, y1 in [0, 1]); the default asks for the lungs inside a
box covering the thorax of a frontal radiograph. CT series of the study are segmented in 3-D
from the boxes in ``InferConfig.ct`` (:mod:`medvl.infer.ct_seg`) when a SAM is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pydicom
import torch

from medvl.data.processes import resolve_device
from medvl.data.transforms import PipelineConfig, geometry_transforms, read_radiograph
from medvl.infer.ct_seg import CtSegConfig, segment_series, split_volume_series
from medvl.infer.result import (
    FindingScore,
    ImageResult,
    ModelIdentity,
    SegmentMask,
    SkippedFile,
    StudyResult,
)
from medvl.infer.selection import EligibilityConfig, select_images, study_files
from medvl.infer.spacing import physical_spacing
from medvl.io.codecs.gpu import enable_gpu_decoding
from medvl.io.dicom import DicomReadError, hash_uid
from medvl.models.aligner import MedVLAligner, create_aligner
from medvl.models.zeroshot import PromptBank, ZeroShotClassifier

logger = logging.getLogger(__name__)


class FindingsScorer(Protocol):
    """What the pipeline needs from a classifier (zero-shot or fine-tuned)."""

    aligner: MedVLAligner

    @property
    def findings(self) -> tuple[str, ...]: ...

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class InferConfig:
    """What to load and how to decide, for ``medvl infer`` and ``medvl listen``."""

    model: str | None = None  # saved aligner directory (or preset); with finetuned: its base
    adapter: str | None = None  # LoRA adapter directory, merged in memory at load
    finetuned: str | None = None  # a `medvl finetune` output folder: its head replaces prompts
    sam: str | None = None  # saved SAM directory or SAM/MedSAM checkpoint; None = no segmentation
    sam_preprocessing: Literal["sam", "medsam"] | None = None  # None = the SAM's own
    prompts: str | None = None  # prompt YAML; None = medvl's CheXpert-14 prompts
    calibration: str | None = None  # JSON written by ZeroShotClassifier.save_calibration
    findings: tuple[str, ...] = ()  # subset of the prompt bank; empty = all
    threshold: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)  # per-finding overrides
    structures: dict[str, tuple[float, float, float, float]] = field(
        default_factory=lambda: {"lungs": (0.06, 0.08, 0.94, 0.92)}
    )
    eligibility: EligibilityConfig = field(default_factory=EligibilityConfig)
    ct: CtSegConfig = field(default_factory=CtSegConfig)  # CT series: 3-D boxes per structure
    batch_size: int = 16
    device: str = "auto"
    write_seg: bool = True
    write_sr: bool = True
    include_identifiers: bool = False

    def __post_init__(self) -> None:
        if self.sam_preprocessing and not self.sam:
            raise ValueError("sam_preprocessing needs sam: a SAM directory or checkpoint")
        if self.finetuned and (self.adapter or self.calibration or self.prompts or self.findings):
            raise ValueError(
                "finetuned: the run folder brings its own adapter, head, prompts and findings; "
                "leave adapter, calibration, prompts and findings unset"
            )
        for name, box in self.structures.items():
            x0, y0, x1, y1 = box
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ValueError(f"structures.{name}: relative box {box} must lie in [0, 1]")


def load_aligner(model: str, adapter: str | None) -> tuple[MedVLAligner, str | None]:
    """The aligner (adapter merged in memory) and the adapter's SHA-256, if any."""
    aligner = create_aligner(model)
    if adapter is None:
        return aligner, None
    from medvl.models.hub import sha256_file
    from medvl.models.lora import load_adapter

    adapter_sha = sha256_file(Path(adapter) / "adapter_model.safetensors")
    return load_adapter(aligner, adapter).merge_and_unload(), adapter_sha


def aligner_checksum(aligner: MedVLAligner) -> str:
    """SHA-256 of the weights as loaded; computed from the tensors when no file backs them."""
    if aligner.weights_sha256:
        return aligner.weights_sha256
    digest = hashlib.sha256()
    for name, tensor in sorted(aligner.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_scorer(config: InferConfig, device: torch.device) -> tuple[FindingsScorer, ModelIdentity]:
    """The findings scorer ``config`` asks for and the identity of the weights it loaded.

    Zero-shot prompts on the aligner (adapter merged, calibration applied) by default; with
    ``finetuned``, the fine-tuned classifier of that run (adapter merged or trained model), on
    ``model`` when given, else on the base the run recorded.
    """
    if config.finetuned:
        from medvl.models.classifier import load_classifier

        model = load_classifier(config.finetuned, base=config.model).to(device)
        return model, ModelIdentity(
            aligner=str(config.finetuned),
            aligner_sha256=aligner_checksum(model.aligner),
            adapter_sha256=model.adapter_sha256,
            head_sha256=model.weights_sha256,
        )
    if not config.model:
        raise ValueError("model: a saved aligner directory is needed (or finetuned=RUN_DIR)")
    aligner, adapter_sha = load_aligner(config.model, config.adapter)
    aligner = aligner.to(device).eval()
    prompts = PromptBank.from_yaml(config.prompts)
    if config.findings:
        prompts = prompts.subset(config.findings)
    classifier = ZeroShotClassifier(aligner, prompts)
    if config.calibration:
        classifier.load_calibration(config.calibration)
    classifier.prompt_embeddings()  # embed the prompt bank once, at load
    identity = ModelIdentity(str(config.model), aligner_checksum(aligner), adapter_sha)
    return classifier, identity


class InferencePipeline:
    """Loaded models + decision rules; :meth:`run_study` is called once per study."""

    def __init__(self, config: InferConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        enable_gpu_decoding(str(self.device), torch.cuda.is_available())  # nvImageCodec, if any
        self.classifier, identity = load_scorer(config, self.device)
        self.aligner = self.classifier.aligner
        self.thresholds = [
            config.thresholds.get(name, config.threshold) for name in self.classifier.findings
        ]
        self.segmenter = None
        sam_name = sam_sha = None
        if config.sam:
            from medvl.models.sam import create_sam
            from medvl.models.sam.predict import SamSegmenter

            settings = (
                {"preprocessing": config.sam_preprocessing} if config.sam_preprocessing else {}
            )
            sam = create_sam(config.sam, **settings)
            self.segmenter = SamSegmenter(sam, device=self.device)
            sam_name, sam_sha = str(config.sam), sam.weights_sha256
        self.identity = dataclasses.replace(identity, sam=sam_name, sam_sha256=sam_sha)
        size = self.aligner.config.image.image_size
        self.resize = geometry_transforms(PipelineConfig(size=size))

    def run_study(self, study: Path | list[Path], study_key: str | None = None) -> StudyResult:
        """Analyse a study folder (any depth) or an explicit list of files.

        ``study_key`` names the result (the caller grouped the files by StudyInstanceUID);
        without it, the eligible images' study hash, or a hash of the file set when they
        disagree or there are none.
        """
        start = time.perf_counter()
        paths = study_files(study) if isinstance(study, Path) else list(study)
        volumes, rest = [], paths
        if self.segmenter is not None and self.config.ct.structures:
            found, rest = split_volume_series(paths, self.config.ct.modalities)
            volumes = [segment_series(self.segmenter, s, self.config.ct) for s in found.values()]
        eligible, skipped = select_images(rest, self.config.eligibility)
        images: list[ImageResult] = []
        for chunk_start in range(0, len(eligible), self.config.batch_size):
            chunk = eligible[chunk_start : chunk_start + self.config.batch_size]
            images += self._run_batch(chunk, skipped)
        study_hashes = {h.study_uid_hash for _, h in eligible} | {s.study_uid_hash for s in volumes}
        if study_key is None:
            study_key = next(iter(study_hashes)) if len(study_hashes) == 1 else _combined(paths)
        return StudyResult(
            study_uid_hash=study_key,
            model=self.identity,
            images=images,
            series=volumes,
            skipped=skipped,
            seconds=time.perf_counter() - start,
        )

    def _run_batch(self, chunk: list, skipped: list[SkippedFile]) -> list[ImageResult]:
        decoded, pixels = [], []
        for path, header in chunk:
            try:
                full, _ = read_radiograph(path)
            except DicomReadError as err:
                skipped.append(SkippedFile(Path(path), err.reason, header.sop_uid_hash))
                continue
            decoded.append((Path(path), header, full[0]))
            pixels.append(self.resize({"image": full})["image"])
        if not decoded:
            return []
        batch = torch.stack([torch.as_tensor(p) for p in pixels]).to(self.device)
        with torch.inference_mode():
            probs = self.classifier.predict_proba(batch).numpy()
        results = []
        for (path, header, full), row in zip(decoded, probs, strict=True):
            findings = [
                FindingScore(name, float(p), float(t))
                for name, p, t in zip(self.classifier.findings, row, self.thresholds, strict=True)
            ]
            results.append(
                ImageResult(
                    source_path=path,
                    sop_uid_hash=header.sop_uid_hash,
                    view_position=header.view_position,
                    modality=header.modality,
                    findings=findings,
                    segments=self._segment(full, path),
                )
            )
        return results

    def _segment(self, image: np.ndarray, path: Path) -> list[SegmentMask]:
        if self.segmenter is None or not self.config.structures:
            return []
        spacing, source = physical_spacing(pydicom.dcmread(path, stop_before_pixels=True))
        h, w = image.shape
        names = list(self.config.structures)
        boxes = np.array(
            [[x0 * w, y0 * h, x1 * w, y1 * h] for x0, y0, x1, y1 in self.config.structures.values()]
        )
        prediction = self.segmenter.predict(image, boxes=boxes)
        return [
            SegmentMask(name, prediction.masks[i], float(prediction.scores[i]), spacing, source)
            for i, name in enumerate(names)
        ]


def _combined(paths: list[Path]) -> str:
    """A stable key for a file set that carries no single StudyInstanceUID."""
    return hash_uid("|".join(sorted(str(p) for p in paths)))
