"""Evaluation jobs behind ``medvl zeroshot`` and ``medvl evaluate``.

``run_zeroshot`` writes, into its output folder:

- ``probabilities.csv``: one row per image (image_id, study_id, one probability per finding);
- ``metrics.json``: per-finding and macro AUROC / AUPRC / F1 / ECE, image-report retrieval,
  and what produced them (model SHA-256, manifest SHA-256, prompts SHA-256, split, counts);
- ``roc.png`` and ``similarity_heatmap.png``; ``failures.jsonl`` if images were unreadable;
- with ``subgroups`` (header fields): ``subgroups.csv`` and a ``subgroups`` section of
  ``metrics.json``, per-subgroup AUROC and the worst gap (:mod:`medvl.eval.subgroups`).

``run_retrieval`` writes ``retrieval.json`` (R@1/5/10 and median rank, both directions, with
every image's study as its ground-truth group), ``retrieval_examples.png`` and
``similarity_heatmap.png``; with ``subgroups``, recall per subgroup in ``retrieval.json`` and
``subgroups.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch

from medvl.data.processes import on_main_process, resolve_device
from medvl.eval.alignment import label_columns
from medvl.eval.embed import EmbeddedPairs, Progress, embed_pair_dataset, load_eval_pairs
from medvl.eval.metrics import classification_metrics, nan_to_none, retrieval_metrics
from medvl.eval.plots import retrieval_examples_png, roc_curves_png, similarity_heatmap_png
from medvl.eval.subgroups import (
    check_fields,
    retrieval_subgroups,
    subgroup_report,
    subgroup_values,
    write_retrieval_subgroup_csv,
    write_subgroup_csv,
)
from medvl.models.aligner import MedVLAligner, create_aligner
from medvl.models.hub import sha256_file
from medvl.models.zeroshot import PromptBank, ZeroShotClassifier, retrieval_scores

logger = logging.getLogger(__name__)


@dataclass
class EvalDataConfig:
    """Which pairs to evaluate and how to load them."""

    split: str | None = "test"
    views: list[str] | None = field(default_factory=lambda: ["PA", "AP"])
    cache: str | None = None
    batch_size: int = 32
    workers: int = 0
    max_images: int | None = None
    device: str = "auto"


@dataclass
class ZeroShotJob:
    """Settings of ``medvl zeroshot`` (model, data and out come from the command line).

    ``calibration`` applies a saved ``calibration.json``; ``calibrate_on`` (e.g. ``"val"``)
    instead fits per-finding temperatures and thresholds on that split of the same manifest
    first and saves them as ``calibration.json``. Neither: the model's temperature and one
    ``threshold`` for every finding.
    """

    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    prompts: str | None = None
    calibration: str | None = None
    calibrate_on: str | None = None
    threshold: float = 0.5
    uncertain: Literal["ignore", "positive", "negative"] = "ignore"
    heatmap_items: int = 32
    subgroups: list[str] = field(default_factory=list)  # header fields: medvl.eval.subgroups
    subgroup_min_positives: int = 5

    def __post_init__(self) -> None:
        check_fields(self.subgroups)


@dataclass
class RetrievalJob:
    """Settings of ``medvl evaluate``."""

    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    examples: int = 4
    top_k: int = 3
    heatmap_items: int = 32
    subgroups: list[str] = field(default_factory=list)  # header fields: medvl.eval.subgroups
    subgroup_min_images: int = 5

    def __post_init__(self) -> None:
        check_fields(self.subgroups)


def _embed(
    model: MedVLAligner, manifest: Path, config: EvalDataConfig, progress: Progress | None
) -> EmbeddedPairs:
    from medvl.data.datasets import PairDataset
    from medvl.data.transforms import PipelineConfig, eval_transforms

    pairs = load_eval_pairs(manifest, config.split, config.views, config.max_images)
    pipeline = PipelineConfig(size=model.config.image.image_size)
    if config.cache:
        from medvl.data.cache import TensorCache

        dataset = PairDataset(pairs, cache=TensorCache.for_pipeline(config.cache, pipeline))
    else:
        dataset = PairDataset(pairs, eval_transforms(pipeline))
    model.to(resolve_device(config.device))
    return embed_pair_dataset(model, dataset, config.batch_size, config.workers, progress=progress)


def _subgroup_values(
    manifest: Path, config: EvalDataConfig, embedded: EmbeddedPairs, fields: list[str]
) -> dict[str, list[str]]:
    """The header ``fields`` of every embedded image, read back from the manifest."""
    pairs = load_eval_pairs(manifest, config.split, config.views, config.max_images)
    by_id = {p.image.image_id: p.image for p in pairs}
    return subgroup_values([by_id[i] for i in embedded.image_ids], fields)


def _provenance(model: MedVLAligner, model_dir: Path, manifest: Path, split: str | None) -> dict:
    return {
        "model": {
            "path": str(model_dir),
            "weights_sha256": model.weights_sha256,
            "starting_weights": model.provenance,
        },
        "data": {
            "manifest": str(manifest),
            "manifest_sha256": sha256_file(manifest),
            "split": split,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_failures(embedded: EmbeddedPairs, out: Path) -> None:
    if embedded.failures:
        with (out / "failures.jsonl").open("w") as fh:
            for failure in embedded.failures:
                fh.write(json.dumps(dataclasses.asdict(failure)) + "\n")


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(nan_to_none(data), indent=2, allow_nan=False))
    return path


def run_zeroshot(
    model_dir: str | Path,
    manifest: str | Path,
    out: str | Path,
    job: ZeroShotJob | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Zero-shot findings on a manifest split; writes the files listed in the module docstring.

    Returns the metrics dictionary that ``metrics.json`` holds. Under ``torchrun`` the main
    process evaluates and writes; the other ranks return its result.
    """
    return on_main_process(_zeroshot, model_dir, manifest, out, job, progress)


def _zeroshot(
    model_dir: str | Path,
    manifest: str | Path,
    out: str | Path,
    job: ZeroShotJob | None,
    progress: Progress | None,
) -> dict[str, Any]:
    job = job or ZeroShotJob()
    model_dir, manifest, out = Path(model_dir), Path(manifest), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = create_aligner(model_dir)  # medvl, CLIP, SigLIP or open_clip folder
    bank = PromptBank.from_yaml(job.prompts)
    classifier = ZeroShotClassifier(model, bank)
    findings = list(bank.findings)
    calibration_report = None
    if job.calibration and job.calibrate_on:
        raise ValueError("give calibration (a saved file) or calibrate_on (a split), not both")
    if job.calibration:
        classifier.load_calibration(job.calibration)
    elif job.calibrate_on:
        val_config = dataclasses.replace(job.data, split=job.calibrate_on)
        val = _embed(model, manifest, val_config, progress)
        calibration_report = classifier.calibrate(
            val.image_embeds, label_columns(val.labels, findings), job.uncertain
        )
        classifier.save_calibration(out / "calibration.json")
    else:
        classifier.thresholds = torch.full((len(bank),), job.threshold)
    embedded = _embed(model, manifest, job.data, progress)
    probs = classifier.predict_proba(embedded.image_embeds)
    labels = label_columns(embedded.labels, findings)

    with (out / "probabilities.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "study_id", *findings])
        for i, row in enumerate(probs.tolist()):
            writer.writerow(
                [embedded.image_ids[i], embedded.study_ids[i], *(f"{p:.6f}" for p in row)]
            )
    metrics = classification_metrics(
        probs, labels, findings, classifier.thresholds.tolist(), job.uncertain
    )
    similarity = retrieval_scores(embedded.image_embeds, embedded.text_embeds)
    retrieval = retrieval_metrics(similarity, embedded.study_ids, embedded.text_study_ids)
    result = {
        **_provenance(model, model_dir, manifest, job.data.split),
        "prompts": {
            "path": job.prompts or "medvl/resources/prompts.yaml",
            "sha256": sha256_file(job.prompts) if job.prompts else None,
        },
        "calibration": {**classifier.calibration_state(), "fitted": calibration_report},
        "counts": {
            "images": len(embedded.image_ids),
            "studies": len(embedded.text_study_ids),
            "failures": len(embedded.failures),
        },
        "classification": metrics,
        "retrieval": retrieval,
    }
    if job.subgroups:
        result["subgroups"] = subgroup_report(
            probs, labels, findings, _subgroup_values(manifest, job.data, embedded, job.subgroups),
            job.uncertain, job.subgroup_min_positives,
        )  # fmt: skip
        write_subgroup_csv(result["subgroups"], out / "subgroups.csv")
    _write_json(out / "metrics.json", result)
    roc_curves_png(probs, labels, findings, out / "roc.png", uncertain=job.uncertain)
    rows = embedded.text_rows()[: job.heatmap_items]
    similarity_heatmap_png(
        similarity[: job.heatmap_items][:, rows],
        out / "similarity_heatmap.png",
        title="Image vs own-study report similarity (diagonal = matched)",
    )
    _write_failures(embedded, out)
    logger.info("zero-shot macro AUROC %s on %d images", metrics["macro"]["auroc"], len(probs))
    return result


def run_retrieval(
    model_dir: str | Path,
    manifest: str | Path,
    out: str | Path,
    job: RetrievalJob | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Image-to-report and report-to-image retrieval on a manifest split (main process)."""
    return on_main_process(_retrieval, model_dir, manifest, out, job, progress)


def _retrieval(
    model_dir: str | Path,
    manifest: str | Path,
    out: str | Path,
    job: RetrievalJob | None,
    progress: Progress | None,
) -> dict[str, Any]:
    job = job or RetrievalJob()
    model_dir, manifest, out = Path(model_dir), Path(manifest), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = create_aligner(model_dir)  # medvl, CLIP, SigLIP or open_clip folder
    embedded = _embed(model, manifest, job.data, progress)
    similarity = retrieval_scores(embedded.image_embeds, embedded.text_embeds)
    metrics = retrieval_metrics(similarity, embedded.study_ids, embedded.text_study_ids)
    result = {
        **_provenance(model, model_dir, manifest, job.data.split),
        "counts": {
            "images": len(embedded.image_ids),
            "studies": len(embedded.text_study_ids),
            "failures": len(embedded.failures),
        },
        "retrieval": metrics,
    }
    if job.subgroups:
        result["subgroups"] = retrieval_subgroups(
            similarity, embedded.study_ids, embedded.text_study_ids,
            _subgroup_values(manifest, job.data, embedded, job.subgroups), job.subgroup_min_images,
        )  # fmt: skip
        write_retrieval_subgroup_csv(result["subgroups"], out / "subgroups.csv")
    _write_json(out / "retrieval.json", result)
    n = min(job.examples, embedded.thumbnails.shape[0])
    retrieval_examples_png(
        similarity[:n],
        embedded.thumbnails[:n],
        embedded.texts,
        out / "retrieval_examples.png",
        image_groups=embedded.study_ids[:n],
        text_groups=embedded.text_study_ids,
        k=job.top_k,
        n_queries=n,
    )
    rows = embedded.text_rows()[: job.heatmap_items]
    similarity_heatmap_png(
        similarity[: job.heatmap_items][:, rows],
        out / "similarity_heatmap.png",
        title="Image vs own-study report similarity (diagonal = matched)",
    )
    _write_failures(embedded, out)
    return result
