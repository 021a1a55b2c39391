"""Does image self-supervised DAPT pay? Linear-probe AUROC of SSL + contrastive vs contrastive.

For each image tower and seed, the same step budget (optimizer steps at the same batch size)
is spent two ways from the same random base: ``contrastive`` (all steps on image-report
alignment, text tower locked) and ``ssl+contrastive`` (``--ssl-steps`` of the tower's
self-supervised method, then the rest on alignment). Two reference arms show what each
part gives alone: ``base`` (no pretraining) and ``ssl`` (all steps self-supervised). Every arm
ends with a linear probe (``finetune`` mode ``linear_probe``) scored by macro AUROC on the
test split over the findings the phantoms draw; the table also gives zero-shot AUROC on the
validation split after alignment and wall times. The peer every arm is measured against is
``contrastive``, in the same run.

Usage (CPU shared with others: one thread)::

    OMP_NUM_THREADS=1 python bench/image_ssl.py --manifest runs/ssl_bench/phantoms/studies.jsonl \
        --budget 600 --ssl-steps 300 --seeds 0 1 --towers tiny vit

Writes ``<--out>.json`` (default ``runs/bench/image_ssl.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from medvl.config import from_dict
from medvl.data.phantom.plan import DRAWABLE
from medvl.eval.metrics import nan_to_none
from medvl.models import create_aligner
from medvl.train.finetune import FinetuneConfig, finetune
from medvl.train.pretrain import PretrainConfig, pretrain

QUIET = {"progress": False, "tensorboard": False, "log_every": 25, "resume": "never"}
TOWERS = {  # preset, image overrides, SSL method, SSL learning rate
    "tiny": ("tiny-minilm", {}, "simclr", 3e-3),
    "vit": ("vit_tiny-minilm", {"image_size": 64, "patch_size": 8}, "mae", 1e-3),
}
ARMS = ("contrastive", "ssl+contrastive", "base", "ssl")


def stages(arm: str, tower: str, args: argparse.Namespace, seed: int) -> list[dict]:
    """The pretraining stages of one arm under the shared step budget."""
    _, _, method, ssl_lr = TOWERS[tower]
    ssl_steps = {"ssl": args.budget, "ssl+contrastive": args.ssl_steps}.get(arm, 0)
    align_steps = args.budget - ssl_steps if "contrastive" in arm else 0
    data = {"manifest": str(args.manifest)}
    out = []
    if ssl_steps:
        train = {"max_steps": ssl_steps, "batch_size": args.batch_size, "lr": ssl_lr,
                 "eval_every": ssl_steps}  # fmt: skip
        out.append(
            {
                "kind": "image_ssl",
                "method": method,
                "data": data,
                "train": {**QUIET, **train, "warmup_steps": 20, "seed": seed},
            }
        )
    if align_steps:
        train = {"max_steps": align_steps, "batch_size": args.batch_size, "lr": 1e-3,
                 "eval_every": align_steps}  # validation once, at the end  # fmt: skip
        out.append(
            {
                "kind": "contrastive",
                "text_tower": "locked",
                "semantic_weight": 0.5,
                "data": {**data, "augment": True},
                "eval_findings": list(DRAWABLE),
                "train": {
                    **QUIET,
                    **train,
                    "warmup_steps": 20,
                    "weight_decay": 0.05,
                    "seed": seed,
                },  # fmt: skip
            }
        )
    return out


def linear_probe(model: Path, args: argparse.Namespace, out: Path, seed: int) -> dict:
    """Linear probe on the frozen aligner's image embeddings; test-split macro AUROC."""
    config = from_dict(
        FinetuneConfig,
        {
            "model": str(model),
            "mode": "linear_probe",
            "output_dir": str(out),
            "data": {"manifest": str(args.manifest)},
            "head": {"findings": list(DRAWABLE)},
            "train": {
                **QUIET,
                "max_steps": args.probe_steps,
                "batch_size": 32,
                "lr": args.probe_lr,
                "warmup_steps": 10,
                "eval_every": max(args.probe_steps // 4, 1),
                "best_metric": "val_auroc",
                "seed": seed,
            },
        },
    )
    return finetune(config)


def macro_with_positives(per_finding: dict, least: int = 5) -> float:
    """Macro AUROC over the findings with at least ``least`` positives in the test split.

    The phantom test split holds about 130 frontal images; a finding with one or two
    positives swings the plain macro by several hundredths on its own.
    """
    values = [m["auroc"] for m in per_finding.values() if (m["n_positive"] or 0) >= least]
    return statistics.mean(v for v in values if v is not None)


def run_arm(arm: str, tower: str, seed: int, args: argparse.Namespace) -> dict:
    """Pretrain one arm from the seeded base, then probe it."""
    preset, image, _, _ = TOWERS[tower]
    root = args.out.parent / args.out.name / f"{tower}_s{seed}" / arm.replace("+", "_")
    started = time.perf_counter()
    row: dict = {"tower": tower, "seed": seed, "arm": arm, "pretrain_s": 0.0}
    if arm == "base":
        torch.manual_seed(seed)
        model = root / "model"
        create_aligner(preset, **{f"image.{k}": v for k, v in image.items()}).save_pretrained(model)
    else:
        config = from_dict(
            PretrainConfig,
            {
                "model": preset,
                "image": image,
                "seed": seed,
                "output_dir": str(root),
                "stages": stages(arm, tower, args, seed),
            },
        )
        summary = pretrain(config)
        model = Path(summary["final_model"])
        row["pretrain_s"] = time.perf_counter() - started
        for stage in summary["stages"]:
            row[f"{stage['kind']}_s"] = stage["wall_time_s"]
            if stage["kind"] == "contrastive":
                row["zeroshot_auroc_val"] = stage["after"].get("zeroshot_auroc")
            else:
                row["ssl_loss"] = [stage["before"].get("ssl_loss"), stage["after"].get("ssl_loss")]
    probe = linear_probe(model, args, root / "probe", seed)
    row["linear_probe_auroc"] = probe["macro_auroc"]
    row["linear_probe_auroc_5pos"] = macro_with_positives(probe["metrics"]["per_finding"])
    row["wall_s"] = time.perf_counter() - started
    print(json.dumps(nan_to_none(row)), flush=True)
    return row


def summarise(rows: list[dict]) -> list[dict]:
    """Mean +/- sd per tower and arm, and the paired gain over ``contrastive`` per seed."""
    table = []
    for tower in dict.fromkeys(r["tower"] for r in rows):
        peer = {r["seed"]: r["linear_probe_auroc"] for r in rows
                if r["tower"] == tower and r["arm"] == "contrastive"}  # fmt: skip
        for arm in ARMS:
            mine = [r for r in rows if r["tower"] == tower and r["arm"] == arm]
            if not mine:
                continue
            values = [r["linear_probe_auroc"] for r in mine]
            gains = [r["linear_probe_auroc"] - peer[r["seed"]] for r in mine if r["seed"] in peer]
            table.append(
                {
                    "tower": tower,
                    "arm": arm,
                    "seeds": len(values),
                    "auroc_mean": statistics.mean(values),
                    "auroc_sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "gain_vs_contrastive": gains,
                    "wall_s_mean": statistics.mean(r["wall_s"] for r in mine),
                }
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True, help="phantom studies.jsonl")
    parser.add_argument("--budget", type=int, default=600, help="pretraining steps per arm")
    parser.add_argument("--ssl-steps", type=int, default=300, help="SSL share of the budget")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--probe-steps", type=int, default=200)
    parser.add_argument("--probe-lr", type=float, default=1e-2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--towers", nargs="+", choices=sorted(TOWERS), default=["tiny"])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/image_ssl"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load_start = os.getloadavg()
    rows = [
        run_arm(arm, tower, seed, args)
        for tower in args.towers
        for seed in args.seeds
        for arm in args.arms
    ]
    table = summarise(rows)
    print(f"{'tower':<6}{'arm':<17}{'seeds':>6}{'linear-probe AUROC':>21}{'gain vs contr.':>26}")
    for t in table:
        gains = " ".join(f"{g:+.3f}" for g in t["gain_vs_contrastive"])
        print(
            f"{t['tower']:<6}{t['arm']:<17}{t['seeds']:>6}"
            f"{t['auroc_mean']:>14.4f} +/- {t['auroc_sd']:.4f}{gains:>26}"
        )
    record = {
        "threads": torch.get_num_threads(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        "table": table,
    }
    path = args.out.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nan_to_none(record), indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
