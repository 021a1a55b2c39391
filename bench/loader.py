"""Benchmark the CPU side of training: pairs/s from the tensor cache, and batch augmentation.

What the training loader does per batch, and nothing else: read each pair's image from the
memory-mapped cache shards (``--reads stored``: in the storage dtype, as training sets do since
the device converts; ``float32``: converted in the loader, as before), its labels and report, stack
them and tokenize the reports (``PairDataset`` + ``PairCollator``, a BERT
tokenizer over the reports' words, 128 tokens). The cache is written once per run under a
temporary folder (random images in [0, 1], ``--pairs`` of them, 256 per shard, stored as each
``--dtype``: float32, float16 or uint8, i.e. 4, 2 or 1 bytes a pixel), then read ``--epochs``
times after one warm-up batch, so the numbers are for a page-cached corpus, as a training run's
later epochs are. DataLoader workers are separate processes; pairs/s per core divides by the
workers (the main process only receives batches).

``BatchAugment`` (what the engine runs on each batch once it is on the training device) is timed
on a batch of ``--augment-batch`` images at each size, on the CPU with ``--threads`` threads and
on the GPU when torch sees one. The issue's target is 2,300 pairs/s into one GPU from at most 8
CPU cores, i.e. 288 pairs/s per core.

Usage::

    python bench/loader.py                                # 224 and 512 px, 1 and 2 workers
    python bench/loader.py --sizes 224 --workers 1 2 4 --dtype float16 float32
    python bench/loader.py --sizes 224 512 --dtype uint8 float16 --reads stored

Prints a table and writes ``runs/bench/loader.json``; every row carries the 1-minute load
average at its start, since the CPU may be shared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medvl.data.batch_augment import BatchAugment  # noqa: E402
from medvl.data.cache import DTYPES, TensorCache  # noqa: E402
from medvl.data.datasets import PairDataset  # noqa: E402
from medvl.data.records import ImageRecord, ImageReportPair  # noqa: E402
from medvl.findings import CHEXPERT_14  # noqa: E402

TARGET_PAIRS_PER_S, TARGET_CORES = 2300, 8
WORDS = [
    "no", "acute", "cardiopulmonary", "process", "heart", "size", "normal", "mild",
    "cardiomegaly", "small", "left", "pleural", "effusion", "right", "basilar", "atelectasis",
    "pneumothorax", "lungs", "clear", "interval", "improvement", "edema", "consolidation",
    "support", "devices", "unchanged", "stable", "opacity",
]  # fmt: skip


def tokenizer() -> Any:
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def make_corpus(root: Path, size: int, n: int, dtype: str) -> tuple[TensorCache, list]:
    """``n`` random images at ``size`` px in a fresh cache, and pairs that point at them."""
    cache = TensorCache(root, f"bench-{size}-{dtype}", dtype=dtype)
    rng = np.random.default_rng(0)
    keys = [f"{i:064x}" for i in range(n)]
    cache.put_many((k, rng.random((1, size, size), dtype=np.float32)) for k in keys)
    pairs = []
    for i, key in enumerate(keys):
        text = " ".join(rng.choice(WORDS, size=60))
        labels = {CHEXPERT_14[i % 14]: 1}
        record = ImageRecord(path=f"/bench/{i}.dcm", image_id=f"img{i}", content_hash=key)
        pairs.append(ImageReportPair(image=record, study_id=f"s{i}", patient_key="k",
                                     text=text, labels=labels))  # fmt: skip
    return cache, pairs


def _no_decode(data: dict) -> dict:
    raise AssertionError("a benchmark image missed the cache")


def time_loader(
    cache: TensorCache, pairs: list, args: argparse.Namespace, workers: int, reads: str
) -> dict:
    dataset = PairDataset(
        pairs, _no_decode, cache=cache, tokenizer=tokenizer(), as_stored=reads == "stored"
    )
    loader = DataLoader(
        dataset, batch_size=args.batch, shuffle=True, num_workers=workers,
        collate_fn=dataset.collate, persistent_workers=workers > 0, drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    load = os.getloadavg()[0]
    batches = iter(loader)
    next(batches)  # workers started, first shards mapped
    seen, start = 0, time.perf_counter()
    for epoch in range(args.epochs):
        for batch in batches:
            seen += batch["image"].shape[0]
        if epoch + 1 < args.epochs:
            batches = iter(loader)
    seconds = time.perf_counter() - start
    rate = seen / seconds
    cores = max(workers, 1)
    return {"pairs": seen, "seconds": seconds, "pairs_per_s": rate,
            "pairs_per_s_per_core": rate / cores, "cores": cores, "load_1min": load}  # fmt: skip


def time_augment(size: int, device: torch.device, args: argparse.Namespace) -> dict:
    augment = BatchAugment(prob=1.0)
    images = torch.rand(args.augment_batch, 1, size, size, device=device)
    ids = [f"img{i}" for i in range(args.augment_batch)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    load = os.getloadavg()[0]
    augment(images, ids)
    sync()
    times = []
    for r in range(args.augment_repeats):
        t0 = time.perf_counter()
        augment(images, [f"{i}-{r}" for i in ids])
        sync()
        times.append(time.perf_counter() - t0)
    ms = 1000 * sorted(times)[len(times) // 2]
    return {"size": size, "device": str(device), "batch": args.augment_batch, "ms_median": ms,
            "threads": torch.get_num_threads(), "load_1min": load}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtype", nargs="+", default=["float16"], choices=DTYPES)
    parser.add_argument("--reads", nargs="+", default=["stored", "float32"],
                        choices=("stored", "float32"))  # fmt: skip
    parser.add_argument("--pairs", type=int, default=2048, help="images in the cache")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--augment-batch", type=int, default=256)
    parser.add_argument("--augment-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for CPU augment")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "loader.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, augments = [], []
    with tempfile.TemporaryDirectory(prefix="medvl-loader-") as tmp:
        for size in args.sizes:
            for dtype in args.dtype:
                cache, pairs = make_corpus(Path(tmp), size, args.pairs, dtype)
                for workers, reads in itertools.product(args.workers, args.reads):
                    row = {"size": size, "dtype": dtype, "workers": workers, "reads": reads}
                    row.update(time_loader(cache, pairs, args, workers, reads))
                    rows.append(row)
                    print(f"{size:>4} px {dtype:<8} read {reads:<7} {workers} workers: "
                          f"{row['pairs_per_s']:8.0f} pairs/s, "
                          f"{row['pairs_per_s_per_core']:6.0f} per core "
                          f"(load {row['load_1min']:.1f})", flush=True)  # fmt: skip
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        for size in args.sizes:
            aug = time_augment(size, device, args)
            augments.append(aug)
            print(f"augment {args.augment_batch} x {size} px on {device} "
                  f"({aug['threads']} threads): {aug['ms_median']:.1f} ms "
                  f"(load {aug['load_1min']:.1f})", flush=True)  # fmt: skip
    per_core = TARGET_PAIRS_PER_S / TARGET_CORES
    print(f"target: {TARGET_PAIRS_PER_S} pairs/s from <= {TARGET_CORES} cores = "
          f"{per_core:.0f} pairs/s per core")  # fmt: skip
    for row in rows:
        cores_needed = TARGET_PAIRS_PER_S / row["pairs_per_s_per_core"]
        row["cores_for_target"] = cores_needed
        print(f"  {row['size']} px {row['dtype']} read {row['reads']} {row['workers']} workers: "
              f"{row['pairs_per_s_per_core'] / per_core:.2f}x the per-core need, "
              f"{cores_needed:.1f} cores for {TARGET_PAIRS_PER_S} pairs/s")  # fmt: skip
    summary = {"loader": rows, "augment": augments, "target_pairs_per_s": TARGET_PAIRS_PER_S,
               "target_cores": TARGET_CORES, "cpu_count": os.cpu_count(),
               "torch": torch.__version__}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
