"""Every fine-tuning mode, k labelled studies per finding, several seeds, from several starts.

For each start (``--start NAME=DIR``: e.g. the general-domain base and the DAPT model), each
mode (zero-shot, linear probe, projection, prompt learning, LoRA, partial, full), each
``k`` in ``--k`` and each seed, one ``medvl finetune`` job runs with that mode's recipe
(:data:`RECIPES`, the defaults of ``configs/lora_findings.yaml`` unless a recipe changes
them) and a fixed step budget. The table reports the mean ± sd over seeds of the macro AUROC
on the held-out test split, the trainable parameters and the wall time per job. The seed
picks the few-shot studies and the initialisation of what trains; zero-shot has no seed.

Step selection: none by default (``--select`` off): every job trains ``--steps`` steps and
the last weights are scored, because the phantom validation split is as small as the test
split and a pick by validation AUROC is mostly noise. ``--select`` scores every quarter of
the budget and the start on validation and keeps the best.

Usage::

    python bench/finetune_modes.py --manifest runs/x/phantoms/studies.jsonl \
        --start base=runs/x/base --start dapt=runs/x/run/model --k 4 16 64 --seeds 0 1 2

Prints a Markdown table and writes ``<--out>.json`` (default ``runs/bench/finetune_modes``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from medvl.config import from_dict
from medvl.eval.metrics import nan_to_none
from medvl.models.classifier import MODES
from medvl.train.finetune import FinetuneConfig, finetune

DEMO_FINDINGS = (
    "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema", "Atelectasis", "Pleural Effusion",
    "Support Devices",
)  # fmt: skip
# Per-mode settings on top of the shared ones below (dotted keys, as on the command line).
# Measured on 4,000 phantoms at 64 px (k=16, 200 steps, 3 seeds): the zero-shot head's weights
# are logit_scale-sized, so it needs lr 1e-2 to move (1e-3 left the probe at zero-shot); LoRA's
# adapters train at 1e-3 beside it, and the WiSE-FT midpoint (wise_alpha 0.5) turns LoRA from
# the DAPT model from -0.010 into +0.016 over zero-shot. The other modes' settings are starting
# points, not tuned.
RECIPES: dict[str, dict[str, Any]] = {
    "zero_shot": {},
    "linear_probe": {"train.lr": 1e-2},
    "projection": {"train.lr": 1e-3},
    "prompt_learning": {"train.lr": 2e-3},
    "lora": {"train.lr": 1e-3, "head_lr": 1e-2, "wise_alpha": 0.5},
    "partial": {"train.lr": 1e-3, "freeze.head_steps": 50, "freeze.top_blocks": 2},
    "full": {"train.lr": 5e-4},
}


def job_config(args: argparse.Namespace, start: str, model: str, mode: str, k: int, seed: int):
    """The :class:`FinetuneConfig` of one cell of the table."""
    data = {
        "model": model,
        "mode": mode,
        "output_dir": str(args.out / start / f"{mode}_k{k}_s{seed}"),
        "data": {"manifest": str(args.manifest), "augment": True},
        "head": {"findings": list(args.findings)},
        "few_shot": {"k": k, "seed": seed},
        "train": {
            "max_steps": args.steps,
            "batch_size": args.batch_size,
            "warmup_steps": 10,
            "seed": seed,
            "eval_every": max(args.steps // 4, 1) if args.select else 0,
            "eval_at_start": args.select,
            "best_metric": "val_auroc" if args.select else "",
            "progress": False,
            "tensorboard": False,
            "log_every": 1000,
            "resume": "never",
        },
        **({} if args.select else {"val_split": ""}),
    }
    overrides = {**RECIPES[mode], **args.recipe.get(mode, {})}
    return from_dict(FinetuneConfig, data, [f"{key}={value}" for key, value in overrides.items()])


def run_job(args: argparse.Namespace, start: str, model: str, mode: str, k: int, seed: int):
    """Run one job in this process (one thread: the pool runs jobs side by side)."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    result = finetune(job_config(args, start, model, mode, k, seed))
    return {
        "start": start,
        "mode": mode,
        "k": k,
        "seed": seed,
        "macro_auroc": result["macro_auroc"],
        "trainable_parameters": result["trainable_parameters"],
        "train_examples": result["train_examples"],
        "best_step": result.get("best_step"),
        "wall_time_s": time.perf_counter() - started,
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd of macro AUROC per (start, mode, k), with parameters and mean wall time."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["start"], row["mode"], row["k"]), []).append(row)
    table = []
    for (start, mode, k), group in cells.items():
        values = [r["macro_auroc"] for r in group if r["macro_auroc"] is not None]
        table.append({
            "start": start, "mode": mode, "k": k, "seeds": len(group),
            "mean": statistics.mean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "trainable_parameters": group[0]["trainable_parameters"],
            "wall_time_s": statistics.mean(r["wall_time_s"] for r in group),
        })  # fmt: skip
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table, with each cell's gain over its start's zero-shot."""
    zero = {r["start"]: r["mean"] for r in table if r["mode"] == "zero_shot"}
    lines = [
        "| start | mode | k | macro AUROC (mean ± sd) | vs zero-shot | trainable | s/job |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        gain = "" if r["mode"] == "zero_shot" or r["start"] not in zero else (
            f"{r['mean'] - zero[r['start']]:+.3f}"
        )  # fmt: skip
        lines.append(
            f"| {r['start']} | {r['mode']} | {r['k'] if r['mode'] != 'zero_shot' else '-'} "
            f"| {r['mean']:.3f} ± {r['sd']:.3f} | {gain} | {r['trainable_parameters']:,} "
            f"| {r['wall_time_s']:.0f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True, help="phantom studies.jsonl")
    parser.add_argument(
        "--start", action="append", required=True, metavar="NAME=DIR", help="aligner to start from"
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--k", nargs="+", type=int, default=[4, 16, 64])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--findings", nargs="+", default=list(DEMO_FINDINGS))
    parser.add_argument("--select", action="store_true", help="pick steps on validation")
    parser.add_argument(
        "--set", action="append", default=[], metavar="MODE:KEY=VALUE",
        help="change a recipe, e.g. lora:train.lr=3e-3",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/finetune_modes"))
    args = parser.parse_args()
    args.starts = dict(s.split("=", 1) for s in args.start)
    args.recipe = {}
    for item in args.set:
        mode, setting = item.split(":", 1)
        key, value = setting.split("=", 1)
        args.recipe.setdefault(mode, {})[key] = value
    return args


def main() -> None:
    args = parse_args()
    cells = [
        (start, model, mode, k, seed)
        for start, model in args.starts.items()
        for mode in args.modes
        for k in ([0] if mode == "zero_shot" else args.k)
        for seed in ([0] if mode == "zero_shot" else args.seeds)
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_job, args, *cell) for cell in cells]
        rows = []
        for i, future in enumerate(futures, 1):
            rows.append(future.result())
            r = rows[-1]
            print(
                f"[{i}/{len(cells)}] {r['start']} {r['mode']} k={r['k']} seed={r['seed']}: "
                f"{r['macro_auroc']:.4f} ({r['wall_time_s']:.0f} s)",
                flush=True,
            )
    table = summarize(rows)
    print(markdown(table))
    record = {
        "device": f"cpu ({platform.processor() or 'cpu'}), {args.jobs} jobs of 1 thread",
        "load_average": os.getloadavg(),
        "manifest": str(args.manifest),
        "starts": args.starts,
        "steps": args.steps,
        "select": args.select,
        "findings": args.findings,
        "recipes": {m: {**RECIPES[m], **args.recipe.get(m, {})} for m in args.modes},
        "wall_time_s": time.perf_counter() - started,
        "table": table,
        "rows": rows,
    }
    path = args.out.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nan_to_none(record), indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
