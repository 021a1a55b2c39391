"""Subprocess entry point for the engine's multi-process and kill tests (not a test module).

Runs the toy regression task under the engine and, on the main process, writes the per-step
losses to ``<out>/result.json``. Launched as ``python engine_worker.py ...`` for one process
or under ``torchrun --nproc_per_node 2`` for two.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from medvl.train.engine import Engine, EngineConfig

spec = importlib.util.spec_from_file_location(
    "toy_task", Path(__file__).parents[1] / "train_toys.py"
)
toy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per step (kill tests)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    engine = Engine(
        EngineConfig(
            output_dir=args.out,
            max_steps=args.steps,
            batch_size=args.batch,
            lr=5e-3,
            warmup_steps=2,
            log_every=1,
            checkpoint_every=args.checkpoint_every,
            keep_last=10,
            progress=False,
            tensorboard=False,
            cpu=True,
        )
    )
    model = toy.ToyNet(dropout=args.dropout)

    def loss_fn(model, batch):
        time.sleep(args.sleep)
        return toy.toy_loss(model, batch)

    result = engine.fit(model, engine.make_loader(toy.ToyRegression(n=args.samples)), loss_fn)
    if engine.is_main_process:
        summary = {
            "losses": result.losses,
            "final_loss": result.final_loss,
            "resumed_from": result.resumed_from,
            "world": engine.accelerator.num_processes,
        }
        (args.out / "result.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
