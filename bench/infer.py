"""Benchmark PACS-style inference: DICOM file in, result JSON out, per radiograph and per study.

What is timed is exactly what ``medvl infer`` does per study after the models are loaded:
header checks of every file, decode + window of the eligible radiographs, resize, aligner
image tower + zero-shot scoring (prompt embeddings are computed once at load, as in service),
and writing the validated result JSON. SEG/SR writing and SAM are timed separately
(``--sam``), since not every deployment segments.

Usage::

    python bench/infer.py                          # ViT-B/16 + BERT-base on CPU, 20 studies
    python bench/infer.py --device cuda --studies 100 --sam

The aligner is random-initialised (weights do not change the cost). Phantom radiographs are
written at ``--size`` (default 2048, a typical CR/DX matrix). Prints a table and writes
``runs/bench/infer-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medvl.data.phantom import generate_phantoms
from medvl.data.records import Study, read_manifest
from medvl.infer.export import export_study
from medvl.infer.pipeline import InferConfig, InferencePipeline
from medvl.models.aligner import create_aligner
from medvl.models.sam import SamConfig, build_sam


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit_b16-bert_base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--sam", action="store_true", help="also segment lungs (vit_b SAM)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = generate_phantoms(args.studies + args.warmup, root / "corpus", size=args.size)
        folders = sorted({Path(s.images[0].path).parent for s in read_manifest(manifest, Study)})
        create_aligner(args.preset).save_pretrained(root / "aligner")
        sam_dir = None
        if args.sam:
            build_sam(SamConfig(variant="vit_b")).save_pretrained(root / "sam")
            sam_dir = str(root / "sam")
        config = InferConfig(
            model=str(root / "aligner"), sam=sam_dir, device=args.device, write_seg=args.sam
        )
        pipeline = InferencePipeline(config)
        per_image, per_study = [], []
        for k, folder in enumerate(folders):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = pipeline.run_study(folder)
            export_study(result, root / "out" / folder.name, write_seg=args.sam, write_sr=False)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            if k >= args.warmup and result.images:
                per_study.append(seconds)
                per_image.append(seconds / len(result.images))
    summary = {
        "preset": args.preset,
        "device": _device_name(args.device),
        "image_size": args.size,
        "sam": args.sam,
        "studies": len(per_study),
        "ms_per_radiograph_median": 1000 * statistics.median(per_image),
        "ms_per_radiograph_p90": 1000 * sorted(per_image)[int(0.9 * (len(per_image) - 1))],
        "studies_per_minute": 60.0 / statistics.mean(per_study),
    }
    header = f"{'preset':<20} {'device':<28} {'ms/radiograph (median)':>24} {'p90':>8}"
    print(f"{header} {'studies/min':>12}")
    print(
        f"{summary['preset']:<20} {summary['device'][:28]:<28} "
        f"{summary['ms_per_radiograph_median']:>24.1f} {summary['ms_per_radiograph_p90']:>8.1f} "
        f"{summary['studies_per_minute']:>12.1f}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"infer-{args.device.split(':')[0]}{'-sam' if args.sam else ''}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
