"""Benchmark ingest and cache building as the corpus grows: images/s and peak memory.

The corpus is header-only phantoms: real Part 10 CR files (patient, study, series and instance
UIDs, view, spacing) with a 16 x 16 pixel image, written by :func:`write_corpus` at a few
thousand files a second, 1,000 per folder. For each ``--sizes`` entry, ``medvl``'s
``ingest_directory`` (one process, ``--workers 1``: the headers are read in the measured
process) and ``build_cache`` (the 64 px eval chain, float16) each run in a fresh subprocess,
which reports its wall time and peak RSS (``ru_maxrss``) — so one size's peak never hides in
another's. The cost per file should stay flat as N grows, and so should the ingest's peak RSS:
its outcomes wait on disk (an SQLite store in the output folder) and the manifests are written
from there, so memory does not grow with N (nor by pixels, for either job).

``--sharded`` also runs ``torchrun --nproc_per_node 2 --no-python medvl ingest`` on the largest
corpus and checks that its ``images.jsonl`` and ``failures.jsonl`` are byte-identical to the
one-process run's.

Usage::

    python bench/ingest_scale.py --sizes 1000 10000 50000 --sharded
    python bench/ingest_scale.py --sizes 1000 4000 16000 --cache-max 4000 --sharded  # 2 cores

Prints a table (with the 1-minute load average at each row) and writes
``runs/bench/ingest_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PER_FOLDER = 1000


def write_corpus(folder: Path, n: int, start: int = 0) -> None:
    """Files ``start .. n-1`` of a header-only CR corpus (one image per study)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian

    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16).tobytes()
    for i in range(start, n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
        meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.10.1.{i}.3"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = (
            ComputedRadiographyImageStorage,
            meta.MediaStorageSOPInstanceUID,
        )
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1.{i}.1"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.1.{i}.2"
        ds.PatientID, ds.PatientSex, ds.PatientAge = f"P{i // 3:07d}", "MF"[i % 2], "060Y"
        ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "CR", ("PA", "AP", "LL")[i % 3], "CHEST"
        ds.PixelSpacing = [0.2, 0.2]
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 128, 256
        ds.PixelData = pixels
        path = folder / f"d{i // PER_FOLDER:04d}" / f"{i:07d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)


def measure(what: str, corpus: Path, out: Path) -> dict:
    """Run one job here (the subprocess side); wall time and this process's peak RSS."""
    from medvl.data.cache import build_cache
    from medvl.data.ingest import ingest_directory
    from medvl.data.records import ImageRecord, read_manifest
    from medvl.data.transforms import PipelineConfig

    start = time.perf_counter()
    if what == "ingest":
        result = ingest_directory(corpus, out, workers=1)
        n = result.images
    else:
        records = read_manifest(out / "images.jsonl", ImageRecord)
        built = build_cache(records, out / "cache", PipelineConfig(size=64), dtype="float16")
        n = built.added + built.reused
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"what": what, "files": n, "seconds": seconds, "per_s": n / seconds,
            "peak_rss_mib": peak / 2**20}  # fmt: skip


def in_subprocess(what: str, corpus: Path, out: Path) -> dict:
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--measure", what, str(corpus), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["load_1min"] = load
    return row


def sharded_equal(corpus: Path, single: Path, work: Path) -> dict:
    """``torchrun --nproc_per_node 2 ... medvl ingest`` against the one-process manifests."""
    out = work / "sharded"
    torchrun = Path(sys.executable).with_name("torchrun")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--no-python", "medvl", "ingest", str(corpus),
         "--out", str(out), "--workers", "1"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    same = all(
        (out / name).read_bytes() == (single / name).read_bytes()
        for name in ("images.jsonl", "failures.jsonl")
    )
    return {"seconds": seconds, "identical_manifests": same, "load_1min": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--cache-max", type=int, default=50000, help="largest N to cache")
    parser.add_argument("--sharded", action="store_true", help="also torchrun 2 ranks")
    parser.add_argument("--work", type=Path, help="keep the corpus here (default: a temp dir)")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "ingest_scale.json")
    args = parser.parse_args(argv)
    if args.measure:
        what, corpus, out = args.measure
        print(json.dumps(measure(what, Path(corpus), Path(out))))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="medvl-ingest-scale-"))
    corpus, rows, written = work / "corpus", [], 0
    try:
        for n in sorted(args.sizes):
            started = time.perf_counter()
            write_corpus(corpus, n, start=written)  # each corpus extends the previous one
            written = n
            print(f"{n} files written in {time.perf_counter() - started:.0f} s", flush=True)
            out = work / f"out-{n}"
            for what in ("ingest", "cache") if n <= args.cache_max else ("ingest",):
                row = {"n": n, **in_subprocess(what, corpus, out)}
                rows.append(row)
                print(f"{what:<7}{n:>7} files: {row['per_s']:8.1f} images/s, "
                      f"{1000 / row['per_s']:6.2f} ms each, peak RSS {row['peak_rss_mib']:7.1f} "
                      f"MiB (load {row['load_1min']:.1f})", flush=True)  # fmt: skip
        summary: dict = {"rows": rows}
        if args.sharded:
            largest = max(args.sizes)
            summary["sharded"] = sharded_equal(corpus, work / f"out-{largest}", work)
            print(f"torchrun 2 ranks on {largest} files: {summary['sharded']}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
