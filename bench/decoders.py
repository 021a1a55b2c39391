"""Measure pydicom's pixel-data plugins per transfer syntax, and reduced JPEG 2000 decoding.

The numbers behind :data:`medvl.io.codecs.plugins.PLUGIN_ORDER` and the decoder choice in
:mod:`medvl.io.codecs.reduced`. One 2,500 x 2,000 radiograph (``bench/ingest.py``'s synthetic
field, 12 bits stored in 16; an 8-bit copy for the 8-bit JPEG processes) is encoded in every
syntax something here can write, then each available plugin decodes it ``--repeats`` times in
one process and one thread (best time kept). Lossless decodes must equal the source pixels;
lossy ones report their largest difference to the source. Times are CPU milliseconds.

Usage::

    python bench/decoders.py              # prints both tables, writes runs/bench/decoders.json
    python bench/decoders.py --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from ingest import BITS_STORED, COLS, ROWS, synthetic_radiograph  # noqa: E402

LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"}
LOSSY |= {"1.2.840.10008.1.2.4.91"}


def dataset(pixels: np.ndarray, bits: int) -> Any:
    """A minimal DX dataset around native ``pixels``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.set_pixel_data(pixels, "MONOCHROME2", bits)
    return ds


def encoded(syntax: str, pixels: np.ndarray, bits: int) -> Any:
    """``pixels`` in ``syntax``, read back from bytes as a file would be."""
    import imagecodecs
    import pydicom
    from pydicom import uid
    from pydicom.encaps import encapsulate

    from medvl.io.codecs.encode import compress

    ds = dataset(pixels, bits)
    if syntax in (
        uid.JPEGLosslessSV1,
        uid.JPEGLossless,
        uid.JPEGExtended12Bit,
        uid.JPEGBaseline8Bit,
    ):
        lossless = syntax in (uid.JPEGLosslessSV1, uid.JPEGLossless)
        frame = imagecodecs.jpeg8_encode(
            pixels, level=None if lossless else 90, lossless=lossless or None,
            predictor=1 if lossless else None, bitspersample=bits,
        )  # fmt: skip
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax == uid.JPEG2000:
        ds.compress(syntax, j2k_cr=[20])
    elif syntax == uid.JPEGLSNearLossless:
        ds.compress(syntax, jls_error=2)
    else:
        compress(ds, syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best CPU seconds of ``repeats`` calls, and the last result.

    CPU time, not wall time: the plugins decode on one thread, so CPU time is what a DataLoader
    worker pays, and it barely moves when other jobs share the machine.
    """
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def measure_plugins(repeats: int) -> dict[str, Any]:
    """Per syntax: each plugin's ms and its agreement with the source pixels."""
    from pydicom import uid
    from pydicom.pixels import get_decoder

    import medvl.io.codecs.plugins  # noqa: F401  (registers the imagecodecs HTJ2K plugin)

    wide = synthetic_radiograph(0)
    narrow = (wide >> (BITS_STORED - 8)).astype(np.uint8)
    syntaxes = [
        uid.RLELossless, uid.JPEGLosslessSV1, uid.JPEGLossless, uid.JPEGLSLossless,
        uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000, uid.HTJ2KLossless,
        uid.HTJ2KLosslessRPCL, uid.HTJ2K, uid.JPEGExtended12Bit, uid.JPEGBaseline8Bit,
    ]  # fmt: skip
    results: dict[str, Any] = {}
    for syntax in syntaxes:
        source = narrow if syntax == uid.JPEGBaseline8Bit else wide
        bits = 8 if syntax == uid.JPEGBaseline8Bit else BITS_STORED
        ds = encoded(syntax, source, bits)
        decoder = get_decoder(syntax)
        rows = {}
        for plugin in decoder.available_plugins:
            try:
                seconds, (arr, _) = best_time(
                    lambda p=plugin, d=decoder, ds=ds: d.as_array(ds, decoding_plugin=p), repeats
                )
            except Exception as err:
                rows[plugin] = {"error": f"{type(err).__name__}: {str(err)[:80]}"}
                continue
            diff = int(np.abs(arr.astype(np.int64) - source).max())
            rows[plugin] = {"ms": seconds * 1e3, "max_diff": diff}
        correct = {
            p: r for p, r in rows.items() if "ms" in r and (syntax in LOSSY or r["max_diff"] == 0)
        }
        order = sorted(correct, key=lambda p: correct[p]["ms"])
        results[str(syntax)] = {"name": syntax.name, "plugins": rows, "order": order}
    return results


def measure_reduced(repeats: int) -> dict[str, Any]:
    """Full and level-2 decode of one codestream per candidate decoder (ms)."""
    import imagecodecs
    from pydicom.encaps import generate_frames
    from pydicom.uid import HTJ2KLossless, JPEG2000Lossless

    from medvl.io.codecs.reduced import _decode

    wide = synthetic_radiograph(0)
    results: dict[str, Any] = {}
    for syntax in (JPEG2000Lossless, HTJ2KLossless):
        stream = next(generate_frames(encoded(syntax, wide, BITS_STORED).PixelData))
        precision = BITS_STORED if syntax == JPEG2000Lossless else 16
        shift = 16 - precision
        row: dict[str, Any] = {}
        for level in (0, 2):
            seconds, _ = best_time(
                lambda lv=level, s=stream, sh=shift: _decode(s, lv, ROWS, COLS, sh), repeats
            )
            row[f"pillow level {level} ms"] = seconds * 1e3
            if syntax == HTJ2KLossless:
                seconds, out = best_time(
                    lambda lv=level, s=stream: imagecodecs.htj2k_decode(s, skipres=lv), repeats
                )
                row[f"imagecodecs skipres {level} ms"] = seconds * 1e3
                row[f"imagecodecs skipres {level} wraps"] = bool(out.max() > 2**BITS_STORED)
        results[syntax.name] = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = {
        "plugins": measure_plugins(args.repeats),
        "reduced": measure_reduced(args.repeats),
        "load_avg": os.getloadavg(),
        "image": f"{ROWS}x{COLS}, BitsStored {BITS_STORED}",
    }
    print(f"\n{'transfer syntax':<58} {'plugin':<12} {'ms':>8} {'max diff':>9}")
    for uid_, entry in results["plugins"].items():
        for plugin, row in entry["plugins"].items():
            cells = (
                f"{row['ms']:>8.1f} {row['max_diff']:>9}" if "ms" in row else f"  {row['error']}"
            )
            print(f"{entry['name'][:42] + ' ' + uid_[-6:]:<58} {plugin:<12} {cells}")
        print(f"{'':<58} order: {', '.join(entry['order'])}")
    print()
    for name, row in results["reduced"].items():
        print(name, {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
    print(f"load average {results['load_avg']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decoders.json").write_text(json.dumps(results, indent=2, default=list))


if __name__ == "__main__":
    main()
