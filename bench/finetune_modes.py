"""Compare fine-tuning modes from one pretrained aligner on the phantom held-out split.

Runs zero-shot, linear probe, LoRA, partial unfreezing and full fine-tuning (and optionally
few-shot LoRA) with the same base, data, steps and seed, and reports macro AUROC on the test
split over the findings the phantoms draw, trainable parameters and wall time.

Usage::

    python bench/finetune_modes.py --base runs/dapt_phantom_tiny/model \
        --manifest runs/phantom_tiny/studies.jsonl --steps 200 --few-shot 8

Prints a table and writes ``<--out>.json`` (default ``runs/bench/finetune_modes.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from medvl.config import from_dict
from medvl.data.phantom.plan import DRAWABLE
from medvl.eval.metrics import nan_to_none
from medvl.train.finetune import FinetuneConfig, finetune

MODES = ("zero_shot", "linear_probe", "lora", "partial", "full")


def run_mode(args: argparse.Namespace, mode: str, k: int, out: Path) -> dict:
    config = from_dict(
        FinetuneConfig,
        {
            "model": str(args.base),
            "mode": mode,
            "output_dir": str(out / f"{mode}{f'_k{k}' if k else ''}"),
            "data": {"manifest": str(args.manifest), "augment": True},
            "head": {"findings": list(DRAWABLE)},
            "few_shot": {"k": k},
            "lora": {"r": 4, "alpha": 8},
            "freeze": {"strategy": "two_stage", "head_steps": args.steps // 4, "top_blocks": 2},
            "train": {
                "max_steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "warmup_steps": 10,
                "eval_every": max(args.steps // 4, 1),
                "eval_at_start": True,
                "best_metric": "val_auroc",
                "progress": False,
                "tensorboard": False,
                "resume": "never",
            },
        },
    )
    started = time.perf_counter()
    result = finetune(config)
    return {
        "mode": mode,
        "few_shot_k": k,
        "macro_auroc": result["macro_auroc"],
        "trainable_parameters": result["trainable_parameters"],
        "train_examples": result["train_examples"],
        "best_step": result.get("best_step"),  # 0 = validation kept the zero-shot start
        "wall_time_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="pretrained aligner directory")
    parser.add_argument("--manifest", type=Path, required=True, help="phantom studies.jsonl")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--few-shot", type=int, default=0, help="also run LoRA with k shots")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/finetune_modes"))
    args = parser.parse_args()

    rows = [run_mode(args, mode, 0, args.out) for mode in MODES]
    if args.few_shot:
        rows.append(run_mode(args, "lora", args.few_shot, args.out))
    print(
        f"{'mode':<14}{'k':>4}{'macro AUROC':>13}{'trainable':>12}{'examples':>10}"
        f"{'best step':>11}{'wall s':>9}"
    )
    for row in rows:
        auroc = row["macro_auroc"]
        print(
            f"{row['mode']:<14}{row['few_shot_k'] or '-':>4}"
            f"{(f'{auroc:.4f}' if auroc is not None else 'n/a'):>13}"
            f"{row['trainable_parameters']:>12,}{row['train_examples']:>10}"
            f"{'-' if row['best_step'] is None else row['best_step']:>11}{row['wall_time_s']:>9.1f}"
        )
    record = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({platform.processor() or 'cpu'})",
        "threads": torch.get_num_threads(),
        "base": str(args.base),
        "manifest": str(args.manifest),
        "steps": args.steps,
        "rows": rows,
    }
    path = args.out.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nan_to_none(record), indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
