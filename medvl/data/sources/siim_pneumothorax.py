"""SIIM-ACR Pneumothorax Segmentation (Kaggle, 2019): DICOM tree + run-length-encoded masks.

Layout read (the Kaggle release; any nesting of the DICOM files works)::

    ROOT/dicom-images-train/<study>/<series>/<ImageId>.dcm
    ROOT/train-rle.csv            # ImageId, EncodedPixels ("-1" = no pneumothorax)

The stage-2 release (``stage_2_images/`` + ``stage_2_train.csv``) has the same columns and is
found too. An image with several rows has several pneumothorax regions; their union is its mask.

The RLE format is SIIM's own, not COCO's: pixels are numbered column by column (the flat index
of a ``(rows, columns)`` mask in Fortran order, i.e. the transposed image), and each pair is
``(gap, length)`` where ``gap`` counts from the end of the previous run, not from pixel 0.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medvl.data.records import Study, split_of
from medvl.data.sources.common import (
    SourceResult,
    add_mask_sample,
    find_file,
    matched_dicoms,
    open_text,
    read_header,
)
from medvl.findings import NEGATIVE, PNEUMOTHORAX, POSITIVE

log = logging.getLogger(__name__)

SOURCE = "siim_pneumothorax"
STRUCTURE = "pneumothorax"
RLE_CSV_NAMES = ("train-rle.csv", "stage_2_train.csv", "train-rle.csv.gz")
EMPTY_RLE = "-1"


def rle_decode(rle: str, shape: Sequence[int]) -> np.ndarray:
    """Decode one SIIM run-length string into a boolean mask of ``shape`` = (rows, columns).

    ``"-1"`` or an empty string is an empty mask.

    Raises
    ------
    ValueError
        If the string has an odd count of numbers, a negative number, or runs past the image.
    """
    rows, cols = int(shape[0]), int(shape[1])
    flat = np.zeros(rows * cols, dtype=bool)
    text = rle.strip()
    if text in ("", EMPTY_RLE):
        return flat.reshape((rows, cols), order="F")
    try:
        numbers = np.asarray(text.split(), dtype=np.int64)
    except ValueError:
        raise ValueError("RLE holds a value that is not an integer") from None
    if numbers.size % 2:
        raise ValueError(f"RLE holds {numbers.size} numbers; it needs (gap, length) pairs")
    if (numbers < 0).any():
        raise ValueError("RLE holds a negative gap or length")
    gaps, lengths = numbers[0::2], numbers[1::2]
    ends = np.cumsum(gaps + lengths)
    starts = ends - lengths
    if ends.size and ends[-1] > flat.size:
        raise ValueError(f"RLE runs to pixel {int(ends[-1])}; a {rows}x{cols} mask has {flat.size}")
    # Slice assignment per run: a mask has hundreds of runs, so this beats any O(pixels) pass.
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        flat[start:end] = True
    return flat.reshape((rows, cols), order="F")


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (non-zero = inside) as a SIIM run-length string; empty gives ``"-1"``.

    ``rle_decode(rle_encode(m), m.shape)`` returns ``m != 0`` exactly.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {mask.shape}")
    flat = np.concatenate([[False], mask.ravel(order="F") != 0, [False]])
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    if changes.size == 0:
        return EMPTY_RLE
    starts, ends = changes[0::2], changes[1::2]
    previous_end = np.concatenate([[0], ends[:-1]])
    pairs = np.stack([starts - previous_end, ends - starts], axis=1).ravel()
    return " ".join(str(int(v)) for v in pairs)


def read_rle_table(path: str | Path) -> tuple[dict[str, list[str]], list[tuple[int, str]]]:
    """Read a SIIM RLE CSV into ``{ImageId: [rle, ...]}`` and a list of ``(line, problem)``.

    Empty-mask rows (``-1``) give an entry with an empty list, so negatives stay known. Column
    names are matched without surrounding spaces (the Kaggle header is ``ImageId, EncodedPixels``).
    """
    table: dict[str, list[str]] = {}
    problems: list[tuple[int, str]] = []
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if "ImageId" not in header or "EncodedPixels" not in header:
            raise ValueError(f"{path}: needs columns ImageId and EncodedPixels, found {header}")
        id_col, rle_col = header.index("ImageId"), header.index("EncodedPixels")
        for lineno, row in enumerate(reader, 2):
            if len(row) <= max(id_col, rle_col) or not row[id_col].strip():
                problems.append((lineno, "row has no ImageId or no EncodedPixels"))
                continue
            image_id, rle = row[id_col].strip(), row[rle_col].strip()
            runs = table.setdefault(image_id, [])
            if rle not in ("", EMPTY_RLE):
                runs.append(rle)
    return table, problems


def decode_image_masks(rles: Sequence[str], shape: Sequence[int]) -> np.ndarray:
    """Union of all pneumothorax regions of one image (boolean ``shape`` mask)."""
    mask = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    for rle in rles:
        mask |= rle_decode(rle, shape)
    return mask


def load_siim(
    root: str | Path,
    out_dir: str | Path,
    rle_csv: str | Path | None = None,
    include_empty: bool = True,
    seed: int = 0,
) -> SourceResult:
    """Read a SIIM-ACR tree into one Study and one SegSample per annotated image.

    Masks are written as 8-bit PNGs (0 / 255) under ``out_dir/masks/``, named by the hashed
    ImageId. ``include_empty=False`` drops negatives from the SegSamples (their Studies stay,
    with Pneumothorax = 0). DICOMs without a CSV row, CSV rows without a DICOM, unreadable files
    and malformed RLE strings are recorded as failures.
    """
    root, out_dir = Path(root), Path(out_dir)
    csv_path = Path(rle_csv) if rle_csv else find_file(root, RLE_CSV_NAMES)
    table, problems = read_rle_table(csv_path)
    result = SourceResult(source=SOURCE)
    for lineno, problem in problems:
        result.fail(f"{csv_path}:{lineno}", problem)
    for image_id, path in matched_dicoms(root, table, csv_path.name, result):
        try:
            record = read_header(path, image_id=image_id)
            mask = decode_image_masks(table[image_id], (record.rows, record.columns))
        except ValueError as err:
            result.fail(path, str(err))
            continue
        label = POSITIVE if mask.any() else NEGATIVE
        record.study_id = record.study_uid_hash or image_id
        split = split_of(record.patient_key, seed=seed)
        if label == POSITIVE or include_empty:
            png = out_dir / "masks" / f"{record.sop_uid_hash}.png"
            add_mask_sample(result, record, mask, png, STRUCTURE, split)
        result.studies.append(
            Study(
                study_id=record.study_id,
                patient_key=record.patient_key,
                source=SOURCE,
                labels={PNEUMOTHORAX: label},
                images=[record],
                split=split,
            )
        )
    result.log_summary(log)
    return result
