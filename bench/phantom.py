"""Benchmark and describe the phantom corpus: generation speed, label prevalence, a PNG grid.

* speed: ``generate_phantoms(--n, size=--size, workers=--workers)`` wall-clock studies/s and
  images/s, plus CPU seconds per study (this process and its workers), so a number taken on a
  busy machine can be read as "studies/s per free core" too;
* prevalence: per CheXpert finding, how many paired reports are positive / uncertain, how many
  studies show it in their pixels (truth file) and how many have a mask for it;
* ``--grid PATH``: a matplotlib grid of frontal phantoms titled with their report impressions.

Goal (issue 3): >= 20 studies/s on 2 cores at 1024 x 1024.

Usage::

    python bench/phantom.py --n 200 --size 1024 --workers 2          # speed
    python bench/phantom.py --n 500 --size 256 --grid docs/phantom_grid.png   # table + grid

Prints tables and writes ``runs/bench/phantom-n<N>-s<size>-w<workers>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

from medvl.data.phantom import generate_phantoms, load_truth
from medvl.data.phantom.plan import DRAWABLE
from medvl.data.records import Study, read_manifest
from medvl.findings import NO_FINDING
from medvl.io.dicom import read_dicom


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def prevalence(out_dir: Path) -> list[dict]:
    """Per finding: report positives / uncertain, studies whose pixels show it, masks."""
    studies = read_manifest(out_dir / "studies.jsonl", Study)
    truth = load_truth(out_dir)
    rows = []
    for finding in (NO_FINDING, *DRAWABLE):
        positive = sum(s.labels.get(finding) == 1 for s in studies)
        uncertain = sum(s.labels.get(finding) == -1 for s in studies)
        if finding == NO_FINDING:
            drawn = sum(not truth[s.study_id]["drawn"] for s in studies)
        else:
            drawn = sum(finding in truth[s.study_id]["drawn"] for s in studies)
        rows.append(
            {
                "finding": finding,
                "report_positive": positive,
                "report_uncertain": uncertain,
                "drawn": drawn,
                "drawn_pct": round(100.0 * drawn / len(studies), 1),
            }
        )
    return rows


def structure_counts(out_dir: Path) -> Counter:
    """How many masks of each structure family the corpus holds."""
    studies = read_manifest(out_dir / "studies.jsonl", Study)
    counts: Counter = Counter()
    for study in studies:
        for image in study.images:
            for name in image.masks:
                counts[name.rstrip("0123456789_").removesuffix("_right").removesuffix("_left")] += 1
    return counts


GRID_FINDINGS = (
    "Pneumothorax",
    "Pleural Effusion",
    "Cardiomegaly",
    "Lung Lesion",
    "Support Devices",
    "Consolidation",
    "Atelectasis",
)


def grid_picks(out_dir: Path) -> list[Study]:
    """One study per finding in :data:`GRID_FINDINGS` (the most conspicuous one with the fewest
    other findings, so the title matches what is visible) and one normal study."""
    studies = read_manifest(out_dir / "studies.jsonl", Study)
    truth = load_truth(out_dir)

    def score(study: Study, finding: str) -> tuple[int, float]:
        specs = {f["finding"]: f for f in truth[study.study_id]["findings"]}
        return (len(truth[study.study_id]["drawn"]), -specs[finding]["conspicuity"])

    chosen: list[Study] = []
    for finding in GRID_FINDINGS:
        pool = [s for s in studies if finding in truth[s.study_id]["drawn"] and s not in chosen]
        if pool:
            chosen.append(min(pool, key=lambda s: score(s, finding)))
    chosen.append(next(s for s in studies if s.labels.get(NO_FINDING) == 1))
    return chosen


def grid_png(out_dir: Path, path: Path) -> None:
    """A 2 x 4 grid of frontal phantoms titled with their real report impressions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = load_truth(out_dir)
    chosen = grid_picks(out_dir)
    cols = 4
    rows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(16, 5.0 * rows), dpi=72, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, study in zip(axes.ravel(), chosen, strict=False):
        image = read_dicom(study.images[0].path)
        ax.imshow(image.pixels, cmap="gray", vmin=0, vmax=1)
        impression = (study.sections.get("impression") or study.model_text).replace("XXXX", "...")
        drawn = ", ".join(truth[study.study_id]["drawn"]) or "nothing drawn"
        title = "\n".join(textwrap.wrap(impression, 52)[:3])
        ax.set_title(f"{title}\n[drawn: {drawn}]", fontsize=9)
    fig.suptitle(
        "medvl phantom radiographs: synthetic pixels drawn from real IU report labels "
        "(titles: the paired report's impression)",
        fontsize=12,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72, pil_kwargs={"optimize": True})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the corpus here")
    parser.add_argument("--grid", type=Path, default=None, help="write a PNG grid here")
    parser.add_argument("--grid-from", type=Path, default=None, help="only draw the grid of DIR")
    args = parser.parse_args(argv)
    if args.grid_from is not None:
        grid_png(args.grid_from, args.grid or Path("docs/phantom_grid.png"))
        return 0

    from medvl.data.phantom.generate import load_banks
    from medvl.data.sources.iu.xray import load_iu_studies

    reports = load_iu_studies()
    load_banks()  # warm the shape cache so it is not timed
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "phantoms"
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        generate_phantoms(
            args.n, out, seed=args.seed, size=args.size, workers=args.workers, studies=reports
        )
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        n_images = sum(len(s.images) for s in read_manifest(out / "studies.jsonl", Study))
        table = prevalence(out)
        masks = structure_counts(out)
        if args.grid is not None:
            grid_png(out, args.grid)
    result = {
        "n_studies": args.n,
        "size": args.size,
        "workers": args.workers,
        "images": n_images,
        "wall_s": round(wall, 2),
        "studies_per_s": round(args.n / wall, 2),
        "images_per_s": round(n_images / wall, 2),
        "cpu_s_per_study": round(cpu / args.n, 4),
        "studies_per_cpu_s": round(args.n / cpu, 2),
        "load_avg": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "prevalence": table,
        "masks": dict(masks),
    }
    print(f"\n{args.n} studies ({n_images} images) at {args.size}px, {args.workers} workers")
    rate, per_cpu = result["studies_per_s"], result["studies_per_cpu_s"]
    print(f"  wall {wall:.1f} s: {rate} studies/s, {result['images_per_s']} images/s")
    print(f"  cpu {result['cpu_s_per_study']} s/study = {per_cpu} studies per CPU-second")
    print(f"  load average during the run: {result['load_avg']}")
    print(f"\n{'finding':28s} {'report +':>8s} {'report ?':>8s} {'drawn':>6s} {'drawn %':>8s}")
    for row in table:
        print(
            f"{row['finding']:28s} {row['report_positive']:8d} {row['report_uncertain']:8d}"
            f" {row['drawn']:6d} {row['drawn_pct']:8.1f}"
        )
    print("\nmasks: " + ", ".join(f"{k} {v}" for k, v in sorted(masks.items())))
    target = Path("runs/bench") / f"phantom-n{args.n}-s{args.size}-w{args.workers}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
