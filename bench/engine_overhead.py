"""Benchmark the engine's overhead: a real contrastive pretraining stage against the bare step.

Both sides train the same aligner preset at the same batch on the same device, interleaved
(bare, stage, bare, stage, ...) so a shared machine's load falls on both alike:

* **bare step**: ``bench/train_step.py``'s step (forward, InfoNCE, backward, AdamW, logit-scale
  clamp) on one synthetic batch held on the device, with as many text tokens as the stage's
  padded batches have;
* **stage**: :func:`medvl.train.pretrain.contrastive.run_contrastive_stage` on phantom studies,
  as ``medvl pretrain`` runs it: tensor cache, ``PairDataset`` loader with tokenization, the
  engine (Accelerate, LR schedule, clipping, the loss and finiteness checks), ``metrics.jsonl``
  + TensorBoard every ``--log-every`` steps and a checkpoint every ``--checkpoint-every``.
  Its pairs/s is the engine's own ``train/samples_per_s`` (evaluation left out), the median over
  the logging windows after the first (which holds start-up).

Usage::

    python bench/engine_overhead.py                         # tiny preset, CPU, batch 32
    python bench/engine_overhead.py --device cuda --preset vit_b16-bert_base --batch 256

``--clock cpu`` times both sides in this process's CPU seconds instead of wall seconds (the
engine's and ``train_step``'s clocks are swapped for ``time.process_time``), so a shared
machine's load hardly enters the ratio; it is exact with ``--threads 1`` and
``--loader-workers 0``, where all the work runs in this process.

Prints both rates, their ratio, the load average at each measurement, and writes
``runs/bench/engine_overhead.json``. The goal is a stage within 10% of the bare step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import train_step  # noqa: E402

from medvl.data.pairs import PairDataConfig, load_pairs  # noqa: E402
from medvl.data.phantom import generate_phantoms  # noqa: E402
from medvl.models import create_aligner  # noqa: E402
from medvl.train.engine import EngineConfig  # noqa: E402
from medvl.train.engine import loop as engine_loop  # noqa: E402
from medvl.train.engine.run_log import read_metrics  # noqa: E402
from medvl.train.pretrain.contrastive import run_contrastive_stage  # noqa: E402
from medvl.train.pretrain.stages import StageConfig  # noqa: E402


def padded_length(manifest: Path, preset: str, batch: int) -> int:
    """Tokens per report in the stage's batches (padded to the longest, truncated)."""
    aligner = create_aligner(preset)
    texts = [p.text for p in load_pairs(PairDataConfig(manifest=manifest), "train")]
    tokenizer, limit = aligner.text_tower.batch_tokenizer(), aligner.text_tower.max_length
    lengths = []
    for start in range(0, len(texts) - batch + 1, batch):
        encoded = tokenizer(texts[start : start + batch], padding=True, truncation=True,
                            max_length=limit, return_tensors="pt")  # fmt: skip
        lengths.append(encoded["input_ids"].shape[1])
    return round(statistics.median(lengths))


def bare_step(args: argparse.Namespace, text_length: int) -> dict[str, Any]:
    options = train_step.parse_args(
        ["--preset", args.preset, "--device", args.device, "--batch", str(args.batch),
         "--text-length", str(text_length), "--steps", str(args.steps), "--warmup", "3"]
    )[0]  # fmt: skip
    load = os.getloadavg()[0]
    result = train_step.run(options)
    return {"pairs_per_s": result["pairs_per_second"], "load_1min": load}


def stage(args: argparse.Namespace, manifest: Path, out: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    aligner = create_aligner(args.preset)
    steps = args.log_every * (args.windows + 1)
    train = EngineConfig(
        output_dir=out, max_steps=steps, batch_size=args.batch, lr=1e-4, warmup_steps=2,
        log_every=args.log_every, checkpoint_every=args.checkpoint_every, eval_every=steps,
        cpu=args.device == "cpu", num_workers=args.loader_workers, progress=False,
        tensorboard=True, resume="never",
    )  # fmt: skip
    data = PairDataConfig(manifest=manifest, augment=args.augment, cache_dir=out.parent / "cache")
    config = StageConfig(kind="contrastive", data=data, train=train, load_best=False)
    load = os.getloadavg()[0]
    run_contrastive_stage(aligner, config, train)
    rows = [r for r in read_metrics(out) if "train/samples_per_s" in r]
    rates = [r["train/samples_per_s"] for r in rows[1:]]  # the first window holds start-up
    return {"pairs_per_s": statistics.median(rates), "windows": rates, "load_1min": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="bare steps timed per repeat")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--windows", type=int, default=3, help="logging windows timed per stage")
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--loader-workers", type=int, default=0)
    parser.add_argument("--augment", action="store_true", help="BatchAugment in the stage")
    parser.add_argument("--studies", type=int, default=400, help="phantom studies (64 px)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "runs" / "bench" / "engine_overhead.json"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        cpu_clock = types.SimpleNamespace(perf_counter=time.process_time, time=time.time)
        engine_loop.time = train_step.time = cpu_clock
    with tempfile.TemporaryDirectory(prefix="medvl-engine-") as tmp:
        root = Path(tmp)
        manifest = generate_phantoms(args.studies, root / "phantoms", seed=0, size=64,
                                     workers=1, progress=False)  # fmt: skip
        length = padded_length(manifest, args.preset, args.batch)
        bare, staged = [], []
        for repeat in range(args.repeats):
            bare.append(bare_step(args, length))
            staged.append(stage(args, manifest, root / f"stage-{repeat}" / "train"))
            b, s = bare[-1], staged[-1]
            ratio = s["pairs_per_s"] / b["pairs_per_s"]
            print(f"repeat {repeat}: bare {b['pairs_per_s']:.1f} pairs/s (load "
                  f"{b['load_1min']:.1f}), stage {s['pairs_per_s']:.1f} pairs/s (load "
                  f"{s['load_1min']:.1f}): {ratio:.3f}", flush=True)  # fmt: skip
    ratios = [s["pairs_per_s"] / b["pairs_per_s"] for s, b in zip(staged, bare, strict=True)]
    summary = {"preset": args.preset, "device": args.device, "batch": args.batch,
               "text_length": length, "augment": args.augment, "clock": args.clock,
               "threads": torch.get_num_threads(), "bare": bare, "stage": staged,
               "ratios": ratios, "ratio_median": statistics.median(ratios),
               "torch": torch.__version__}  # fmt: skip
    print(f"stage / bare step: {summary['ratio_median']:.3f} (median of {len(ratios)}; "
          f"goal >= 0.90), {length} text tokens, batch {args.batch}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
