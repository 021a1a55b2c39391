"""SAM mask-decoder fine-tuning on the shared engine (``medvl segment-finetune``).

The job, in order:

1. **Samples** from the configured source (phantom chest radiographs by default, a SegSample or
   Study manifest, a generic image/mask folder, or the SIIM pneumothorax layout), filtered by
   structure and split by patient.
2. **Cache**: every distinct image goes through the frozen image encoder once
   (:func:`medvl.models.sam.cache.encode_images`); when the encoder trains (LoRA, full) the
   resized input is cached instead. Reruns with the same encoder and images encode nothing.
3. **Train** with :class:`medvl.train.Engine`: a step draws prompts for the batch (jittered
   boxes, optional points), runs prompt encoder + batched decoder on cached embeddings and
   applies Dice + BCE (+ focal) + IoU-MSE. The evaluation during training reports Dice per
   structure on the validation split.
4. **Report**: the best (or last) weights are saved with ``save_pretrained`` to
   ``OUT/model``; the validation and test splits get Dice, HD95 and NSD per structure in
   ``OUT/metrics.json`` (per case in ``OUT/cases_<split>.jsonl``) and overlay PNGs. With
   ``eval.before`` the same splits are scored with the untrained decoder too (``"before"``).

``OUT`` is the job's ``output_dir``. It also holds the resolved ``config.yaml``, the generated
phantoms (``phantoms/``, unless ``data.path`` says otherwise) and the engine run (``train/``:
checkpoints, ``metrics.jsonl``, TensorBoard), as in fine-tuning; the job sets the engine's
folder, so ``train.output_dir`` is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from medvl.config import save_config
from medvl.data.records import Failure, write_manifest
from medvl.data.seg_samples import SegDataConfig, load_seg_samples, split_samples
from medvl.data.sources.mask_folder import read_gray
from medvl.eval.sam_eval import GroundTruth, evaluate_prepared
from medvl.eval.segmentation import cases_to_rows, summarize_cases
from medvl.models.sam import SamConfig, build_sam
from medvl.models.sam.cache import FileHashMemo, FileImageSource, encode_images, open_cache
from medvl.models.sam.features import FeatureStore, PreparedSet, SamSegDataset, prepare_samples
from medvl.models.sam.loss import LossConfig, SamSegLoss, valid_area
from medvl.models.sam.prompts import PromptConfig, simulate_prompts
from medvl.train.engine import Engine, EngineConfig, TrainResult
from medvl.train.engine.config import refuse_output_dir

logger = logging.getLogger(__name__)


@dataclass
class CacheConfig:
    """Where and how the embedding cache lives."""

    dir: str = "runs/sam_cache"
    shard_size: int = 256
    encode_batch_size: int = 8
    num_workers: int = 0
    preload: bool = True  # copy the run's entries into RAM; False reads the memory maps
    max_preload_gib: float = 8.0  # larger caches are read from the memory maps anyway


@dataclass
class SegEvalConfig:
    """Validation during and after training."""

    tolerance_mm: float = 2.0
    overlays: int = 8
    batch_size: int = 16
    splits: tuple[str, ...] = ("val", "test")  # evaluated at the end, when present
    before: bool = False  # also evaluate these splits before training (metrics.json "before")


@dataclass
class SegmentConfig:
    """The ``segment-finetune`` job."""

    output_dir: Path = Path("runs/segment")
    model: SamConfig = field(default_factory=SamConfig)
    data: SegDataConfig = field(default_factory=SegDataConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    eval: SegEvalConfig = field(default_factory=SegEvalConfig)
    train: EngineConfig = field(default_factory=lambda: EngineConfig(best_metric="dice"))

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        refuse_output_dir(self.train, "train", "<output_dir>/train")


@dataclass
class SegmentResult:
    """What :func:`run_segment_finetune` returns (the files are under ``output_dir``)."""

    output_dir: Path
    model_dir: Path
    train: TrainResult
    initial_dice: float
    metrics: dict[str, dict[str, dict[str, float]]]
    n_train: int
    n_val: int
    failures: int
    encoded: int
    metrics_before: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def _reader_id(config: SegmentConfig) -> str:
    window = config.data.window
    return json.dumps({"reader": "mask_folder.read_gray", "window": window}, default=list)


def _dice_of(cases: list[Any]) -> dict[str, float]:
    summary = summarize_cases(cases)
    out = {f"dice/{name}": row["dice_mean"] for name, row in summary.items() if name != "all"}
    out["dice"] = summary.get("all", {}).get("dice_mean", math.nan)
    return out


def run_segment_finetune(config: SegmentConfig) -> SegmentResult:
    """Run the whole job (see the module docstring) and return its result."""
    out_dir = config.output_dir
    # full training leaves parts unused (mask-input encoder, absent prompt types): DDP must be
    # told, or its reducer waits forever for their gradients
    unused = config.train.find_unused_parameters or config.model.train_mode == "full"
    engine_config = dataclasses.replace(
        config.train, output_dir=out_dir / "train", find_unused_parameters=unused
    )
    engine = Engine(engine_config)
    main = engine.is_main_process
    if main:
        save_config(config, out_dir / "config.yaml")
    samples, failures = load_seg_samples(config.data, out_dir)
    by_split = split_samples(samples, config.data)
    train_samples, val_samples = by_split["train"], by_split["val"]
    if not train_samples or not val_samples:
        raise ValueError(
            f"need training and validation samples; got {len(train_samples)} train and "
            f"{len(val_samples)} val after filtering (structures={list(config.data.structures)})"
        )
    model = build_sam(config.model).to(engine.device)
    encoder_frozen = not model.encoder_trainable
    paths = sorted({s.image_path for split in by_split.values() for s in split})
    image_index = {p: i for i, p in enumerate(paths)}
    memo = FileHashMemo(Path(config.cache.dir) / "file_hashes.jsonl")
    reader = partial(read_gray, window=config.data.window)
    source = FileImageSource(paths, reader, _reader_id(config), memo)
    kind = "embedding" if encoder_frozen else "pixels"
    with engine.accelerator.main_process_first():
        cache = open_cache(model, source, config.cache.dir, kind, config.cache.shard_size)
        encoded = encode_images(
            model, source, cache, config.cache.encode_batch_size, config.cache.num_workers,
            progress=config.train.progress and main,
        )  # fmt: skip
        if main:
            memo.save()
    failures += [Failure(paths[i], reason) for i, reason in encoded.failures.items()]
    store = FeatureStore(cache, encoded.refs, config.cache.preload, config.cache.max_preload_gib)
    prepared = {
        name: prepare_samples(
            split, image_index, encoded.refs, config.model.img_size, config.model.preprocessing
        )
        for name, split in by_split.items()
    }
    for part in prepared.values():
        failures += part.failures
    if main and failures:
        write_manifest(out_dir / "failures.jsonl", failures)
        logger.warning("%d inputs skipped; see %s", len(failures), out_dir / "failures.jsonl")
    train_set = SamSegDataset(prepared["train"].samples, store)
    val_set = SamSegDataset(prepared["val"].samples, store)
    logger.info(
        "SAM %s (%s): %d train / %d val samples, %d images encoded now, encoder %s",
        config.model.variant, config.model.train_mode, len(train_set), len(val_set),
        encoded.computed, "frozen (cached embeddings)" if encoder_frozen else "trainable",
    )  # fmt: skip
    criterion = SamSegLoss(config.loss)
    img_size, grid = config.model.img_size, config.model.img_size // 4
    ground_truth = GroundTruth()

    def loss_fn(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        prompts = simulate_prompts(
            config.prompts, batch["box"], batch["target"], batch["input_size"], img_size
        )
        if encoder_frozen:
            out = net(image_embeddings=batch["features"].float(), **prompts)
        else:
            out = net(gray=batch["features"].float(), input_sizes=batch["input_size"], **prompts)
        valid = valid_area(batch["input_size"], grid, img_size)
        return criterion(out.low_res_logits, out.iou_pred, batch["target"], valid)

    def eval_fn(net: torch.nn.Module) -> dict[str, float]:
        cases = evaluate_prepared(
            net, val_set, config.prompts, encoder_frozen, ground_truth, distances=False,
            batch_size=config.eval.batch_size,
        )  # fmt: skip
        return _dice_of(cases)

    model.eval()
    with torch.no_grad():
        initial = eval_fn(model)["dice"]
    logger.info("validation Dice before training: %.4f", initial)
    before: dict[str, dict[str, dict[str, float]]] = {}
    if config.eval.before and main:
        before = _split_metrics(model, config, prepared, store, encoder_frozen, ground_truth)
    loader = engine.make_loader(train_set)
    train_result = engine.fit(model, loader, loss_fn, eval_fn)
    model = engine.accelerator.unwrap_model(model)
    if train_result.best_checkpoint is not None:
        from medvl.train.engine.checkpoint import load_model_weights

        load_model_weights(model, train_result.best_checkpoint)
        logger.info("restored the best checkpoint (step %s)", train_result.best_step)
    model_dir = out_dir / "model"
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    if main:
        model.provenance.notes.update(
            train_steps=train_result.step, best_step=train_result.best_step,
            data_source=config.data.source,
        )  # fmt: skip
        model.save_pretrained(model_dir)
        metrics = _split_metrics(
            model, config, prepared, store, encoder_frozen, ground_truth, (reader, out_dir)
        )
        summary = {"initial_val_dice": initial, "splits": metrics}
        if before:
            summary["before"] = before
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    engine.accelerator.wait_for_everyone()
    return SegmentResult(
        output_dir=out_dir, model_dir=model_dir, train=train_result, initial_dice=initial,
        metrics=metrics, n_train=len(train_set), n_val=len(val_set), failures=len(failures),
        encoded=encoded.computed, metrics_before=before,
    )  # fmt: skip


def _split_metrics(
    model: torch.nn.Module,
    config: SegmentConfig,
    prepared: dict[str, PreparedSet],
    store: FeatureStore,
    encoder_frozen: bool,
    ground_truth: GroundTruth,
    report: tuple[Any, Path] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Full metrics (Dice, HD95, NSD) for each configured split.

    With ``report`` (an image reader and the job folder), also the overlays and the per-case
    ``cases_<split>.jsonl`` of the final report.
    """
    model.eval()
    metrics = {}
    for split in config.eval.splits:
        part = prepared.get(split)
        if part is None or not (part.samples or part.empty):
            continue
        reader, out_dir = report or (None, None)
        cases = evaluate_prepared(
            model, SamSegDataset(part.samples, store), config.prompts, encoder_frozen,
            ground_truth, part.empty, distances=True, tolerance_mm=config.eval.tolerance_mm,
            batch_size=config.eval.batch_size,
            overlay_dir=out_dir / "overlays" / split if out_dir else None,
            max_overlays=config.eval.overlays if out_dir else 0, read_image=reader,
        )  # fmt: skip
        metrics[split] = summarize_cases(cases)
        if out_dir is not None:
            with (out_dir / f"cases_{split}.jsonl").open("w") as fh:
                for row in cases_to_rows(cases):
                    fh.write(json.dumps(row) + "\n")
        stage = "after training" if report else "before training"
        logger.info("%s %s: %s", split, stage, json.dumps(metrics[split].get("all", {})))
    return metrics


__all__ = [
    "CacheConfig",
    "SegDataConfig",
    "SegEvalConfig",
    "SegmentConfig",
    "SegmentResult",
    "run_segment_finetune",
]
