"""Read one DICOM file into display-correct float32 pixels plus safe (PHI-free) metadata.

The pipeline, in the order PS3.3 C.11 defines it:

1. decode with pydicom 3, plugins tried in the measured order per transfer syntax
   (:mod:`medvl.io.codecs.plugins`); the plugin that decoded is recorded in
   ``DicomImage.decoder``. With a ``target_size`` far below the stored size, JPEG 2000 / HTJ2K
   decode at a reduced resolution level (:mod:`medvl.io.codecs.reduced`);
2. modality LUT: RescaleSlope/Intercept per frame (per-frame, then shared functional groups, then
   the root dataset) or the Modality LUT Sequence;
3. VOI: a configured window (or CT preset) overrides; else the VOI LUT Sequence; else
   WindowCenter/Width from the file (``window_index`` picks among several; per-frame groups
   first); a missing or invalid window falls back to the image's min-max;
4. presentation: MONOCHROME1 or PresentationLUTShape INVERSE inverts, once, after VOI;
5. float32 in [0, 1].

Every failure becomes :class:`DicomReadError` naming the file and the reason in plain words; the
message never carries patient name, ID, birth date or accession number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, convert_color_space

from medvl.io import windows
from medvl.io.codecs.reduced import TargetSize, decode_reduced
from medvl.io.dicom_header import (
    DicomReadError,
    PixelHeader,
    decode_pixels,
    float_tuple,
    load_dataset,
    optional_int,
    pixel_spacing,
    validate_pixel_header,
)
from medvl.io.windows import CT_WINDOW_PRESETS

__all__ = ["CT_WINDOW_PRESETS", "DicomImage", "DicomReadError", "hash_uid", "read_dicom"]

logger = logging.getLogger(__name__)

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


@dataclass
class DicomImage:
    """Pixels in display space (or modality units) plus header facts that carry no PHI.

    ``pixels`` is float32: (H, W) gray, (F, H, W) multi-frame, with a trailing 3 when
    ``color="rgb"``; ``None`` when read with ``decode=False``. ``window`` is the (center, width)
    applied in modality units (for ``voi="minmax"`` the equivalent window of the data range).
    Beyond the shared contract: ``rescale`` (slope, intercept of frame 0), patient-space geometry
    for :mod:`medvl.io.series` (``image_position``, ``image_orientation``, ``frame_positions``
    of enhanced multi-frame files, ``slice_thickness``), ``inverted`` (MONOCHROME1/INVERSE) and
    ``reduction``: the pixels are the stored image at 1 / 2**reduction (ceil) per side, a JPEG
    2000 resolution level; ``rows``, ``columns`` and ``pixel_spacing`` stay the file's.
    """

    pixels: np.ndarray | None
    path: str
    modality: str
    photometric: str
    rows: int
    columns: int
    frames: int
    bits_stored: int
    pixel_spacing: tuple[float, float] | None
    view_position: str
    window: tuple[float, float] | None
    voi: str
    transfer_syntax: str
    decoder: str
    sop_uid_hash: str
    series_uid_hash: str
    study_uid_hash: str
    sop_class_uid: str = ""
    rescale: tuple[float, float] | None = None
    image_position: tuple[float, float, float] | None = None
    image_orientation: tuple[float, ...] | None = None
    slice_thickness: float | None = None
    instance_number: int | None = None
    frame_positions: tuple[tuple[float, float, float] | None, ...] | None = None
    inverted: bool = False
    reduction: int = 0


def hash_uid(uid: str, salt: str = "") -> str:
    """Return a stable pseudonym for a DICOM UID: sha256(salt + uid) as 16 hex characters.

    UIDs can link back to a patient through the PACS, so records keep only this hash.
    An empty UID maps to ``""`` so a missing UID never collides with a real one.
    """
    uid = str(uid or "").strip().rstrip("\x00")
    if not uid:
        return ""
    return hashlib.sha256(f"{salt}{uid}".encode()).hexdigest()[:16]


def read_dicom(
    path: str | os.PathLike,
    *,
    window: tuple[float, float] | str | None = None,
    window_index: int = 0,
    color: Literal["gray", "rgb"] = "gray",
    decode: bool = True,
    output: Literal["display", "modality"] = "display",
    target_size: TargetSize | None = None,
) -> DicomImage:
    """Read a DICOM file and return display-ready pixels with safe metadata.

    Parameters
    ----------
    path
        The file to read.
    window
        ``(center, width)`` in modality units, or a CT preset name from ``CT_WINDOW_PRESETS``;
        overrides any VOI in the file.
    window_index
        Which of several VOI LUTs / window values in the file to use.
    color
        ``"gray"`` returns luminance for colour images; ``"rgb"`` returns three channels (gray
        images are replicated, so every image has the same layout).
    decode
        ``False`` reads and validates the header only (fast rejection in batch ingest).
    output
        ``"display"`` gives [0, 1] display values; ``"modality"`` stops after the modality LUT
        and returns float32 modality units (HU for CT), no VOI and no inversion (colour images:
        the stored sample values).
    target_size
        The size the caller will resize to: an int is the longest side, a pair (rows, columns).
        JPEG 2000 / HTJ2K grayscale images at least twice as large decode at the smallest
        resolution level still covering it (``DicomImage.reduction``); the display pipeline is
        the same. Files whose VOI would be the min-max of the pixels decode in full (a reduced
        image lacks the noise extremes). ``None`` always decodes the full image.

    Raises
    ------
    DicomReadError
        For every problem with the file. ``ValueError`` only for invalid arguments.
    """
    if window is not None:
        windows.resolve_window(window)
    if window_index < 0:
        raise ValueError(f"window_index must be >= 0, got {window_index}")
    if color not in ("gray", "rgb"):
        raise ValueError(f"color must be 'gray' or 'rgb', got {color!r}")
    if output not in ("display", "modality"):
        raise ValueError(f"output must be 'display' or 'modality', got {output!r}")
    if target_size is not None and min(np.atleast_1d(target_size)) < 1:
        raise ValueError(f"target_size must be positive, got {target_size!r}")
    try:
        return _read(os.fspath(path), window, window_index, color, decode, output, target_size)
    except DicomReadError:
        raise
    except Exception as exc:  # the contract: nothing but DicomReadError escapes
        logger.debug("unexpected failure reading %s", path, exc_info=True)
        raise DicomReadError(path, _unexpected(exc)) from exc


def _unexpected(exc: Exception) -> str:
    """A plain-words reason for an exception nobody anticipated, without echoing values."""
    if isinstance(exc, MemoryError):
        return "not enough memory to decode the image"
    return f"unexpected {type(exc).__name__} while reading the image (corrupt or unusual header)"


def _read(
    path: str,
    window: tuple[float, float] | str | None,
    window_index: int,
    color: str,
    decode: bool,
    output: str,
    target_size: TargetSize | None,
) -> DicomImage:
    ds = load_dataset(path, defer_pixels=not decode)
    header = validate_pixel_header(ds, path)
    image = _metadata(ds, path, header)
    if not decode:
        return image
    reducible = target_size and (output == "modality" or window is not None or _has_voi(ds))
    reduced = decode_reduced(ds, header.rows, header.columns, target_size) if reducible else None
    if reduced is None:
        arr, props, image.decoder = decode_pixels(ds, path, header)
    else:
        arr, props = reduced.pixels, {}
        image.decoder, image.reduction = reduced.plugin, reduced.level
        header = dataclasses.replace(header, rows=arr.shape[1], columns=arr.shape[2])
    if header.samples == 1 and header.photometric != "PALETTE COLOR":
        _gray(image, ds, arr, header, window, window_index, color, output)
    else:
        _color(image, ds, arr, props, header, color, output)
    return image


def _has_voi(ds: Dataset) -> bool:
    """The file states its VOI; else the min-max window needs the full image's extremes."""
    frame = _group_item(ds, 0, "FrameVOILUTSequence")
    return bool(ds.get("VOILUTSequence") or ds.get("WindowWidth") or frame is not None)


def _metadata(ds: Dataset, path: str, header: PixelHeader) -> DicomImage:
    orientation = float_tuple(ds.get("ImageOrientationPatient"), 6)
    position = float_tuple(ds.get("ImagePositionPatient"), 3)
    first = _group_item(ds, 0, "PlanePositionSequence")
    if position is None and first is not None:
        position = float_tuple(first.get("ImagePositionPatient"), 3)
    plane = _group_item(ds, 0, "PlaneOrientationSequence")
    if orientation is None and plane is not None:
        orientation = float_tuple(plane.get("ImageOrientationPatient"), 6)
    thickness = float_tuple(ds.get("SliceThickness"), 1)
    if thickness is None and (measures := _group_item(ds, 0, "PixelMeasuresSequence")):
        thickness = float_tuple(measures.get("SliceThickness"), 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    frame_positions = None
    if per_frame and len(per_frame) == header.frames:
        frame_positions = tuple(_frame_position(item) for item in per_frame)
    return DicomImage(
        pixels=None,
        path=path,
        modality=str(ds.get("Modality", "") or ""),
        photometric=header.photometric,
        rows=header.rows,
        columns=header.columns,
        frames=header.frames,
        bits_stored=header.bits_stored,
        pixel_spacing=pixel_spacing(ds, _group_item(ds, 0, "PixelMeasuresSequence")),
        view_position=str(ds.get("ViewPosition", "") or ""),
        window=None,
        voi="none",
        transfer_syntax=str(header.transfer_syntax),
        decoder="",
        sop_uid_hash=hash_uid(ds.get("SOPInstanceUID", "")),
        series_uid_hash=hash_uid(ds.get("SeriesInstanceUID", "")),
        study_uid_hash=hash_uid(ds.get("StudyInstanceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
        image_position=position,
        image_orientation=orientation,
        slice_thickness=thickness[0] if thickness else None,
        instance_number=optional_int(ds.get("InstanceNumber")),
        frame_positions=frame_positions,
    )


def _frame_position(item: Dataset) -> tuple[float, float, float] | None:
    plane = item.get("PlanePositionSequence")
    return float_tuple(plane[0].get("ImagePositionPatient"), 3) if plane else None


def _group_item(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """First item of ``keyword`` for ``frame`` from per-frame, then shared functional groups."""
    for groups_keyword, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(groups_keyword)
        if groups and index < len(groups):
            sequence = groups[index].get(keyword)
            if sequence:
                return sequence[0]
    return None


def _frame_rescale(ds: Dataset, frame: int, path: str) -> tuple[float, float] | None:
    item = _group_item(ds, frame, "PixelValueTransformationSequence")
    source = item if item is not None and "RescaleSlope" in item else ds
    try:
        return windows.rescale_params(source.get("RescaleSlope"), source.get("RescaleIntercept"))
    except (TypeError, ValueError, IndexError) as exc:
        raise DicomReadError(path, "RescaleSlope/RescaleIntercept are not usable numbers") from exc


def _gray(
    image: DicomImage,
    ds: Dataset,
    arr: np.ndarray,
    header: PixelHeader,
    window: tuple[float, float] | str | None,
    window_index: int,
    color: str,
    output: str,
) -> None:
    """Run modality -> VOI -> presentation as per-frame steps; affine chains fuse into one pass."""
    stack = arr.reshape((header.frames, header.rows, header.columns))
    modality = _modality_steps(image, ds, header)
    if output == "modality":
        pixels = _apply(stack, modality)
    else:
        voi = _voi_steps(image, ds, stack, modality, header, window, window_index)
        shape = str(ds.get("PresentationLUTShape", "") or "").upper()
        image.inverted = header.photometric == "MONOCHROME1" or shape == "INVERSE"
        after = (windows.INVERT,) if image.inverted else ()
        steps = [windows.compose(m, v, *after) for m, v in zip(modality, voi, strict=True)]
        pixels = _apply(stack, steps)
        np.clip(pixels, 0.0, 1.0, out=pixels)
    if header.frames == 1:
        pixels = pixels[0]
    if color == "rgb":
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    image.pixels = pixels


def _apply(stack: np.ndarray, steps: list[windows.Step]) -> np.ndarray:
    """Apply one step per frame (all frames at once when they share one)."""
    if all(step == steps[0] for step in steps):
        return steps[0](stack)
    out = np.empty(stack.shape, dtype=np.float32)
    for frame, step in enumerate(steps):
        out[frame] = step(stack[frame])
    return out


def _modality_steps(image: DicomImage, ds: Dataset, header: PixelHeader) -> list[windows.Step]:
    """Per-frame modality LUT: the Modality LUT Sequence, else (per-frame) rescale."""
    if ds.get("ModalityLUTSequence"):
        try:
            lut = windows.read_lut(ds.ModalityLUTSequence[0], header.little_endian, False)
        except ValueError as exc:
            raise DicomReadError(image.path, f"unusable Modality LUT Sequence: {exc}") from exc
        return [lut] * header.frames
    rescales = [_frame_rescale(ds, f, image.path) for f in range(header.frames)]
    image.rescale = rescales[0]
    return [windows.Affine(*r) if r else windows.IDENTITY for r in rescales]


def _modality_range(stack: np.ndarray, modality: list[windows.Step]) -> tuple[float, float]:
    """Smallest and largest modality value in the image (cheap when the rescale is affine)."""
    if all(step == modality[0] for step in modality) and isinstance(modality[0], windows.Affine):
        ends = modality[0](np.array([stack.min(), stack.max()]))
        return float(ends.min()), float(ends.max())
    values = _apply(stack, modality)
    return float(values.min()), float(values.max())


def _voi_steps(
    image: DicomImage,
    ds: Dataset,
    stack: np.ndarray,
    modality: list[windows.Step],
    header: PixelHeader,
    window: tuple[float, float] | str | None,
    window_index: int,
) -> list[windows.Step]:
    """Choose the VOI per frame, recording what was used on ``image``."""
    path, frames = image.path, header.frames
    if window is not None:
        center, width, image.voi = windows.resolve_window(window)
        image.window = (center, width)
        return [windows.window_step(center, width)] * frames
    voi_luts = ds.get("VOILUTSequence")
    if voi_luts:
        if window_index >= len(voi_luts):
            raise DicomReadError(
                path,
                f"window_index {window_index} requested but the file holds "
                f"{len(voi_luts)} VOI LUT(s)",
            )
        signed = _modality_range(stack, modality)[0] < 0
        try:
            lut = windows.read_lut(voi_luts[window_index], header.little_endian, signed)
        except ValueError as exc:
            raise DicomReadError(path, f"unusable VOI LUT Sequence: {exc}") from exc
        image.voi = "voi_lut"
        return [windows.compose(lut, windows.Affine(1.0 / lut.output_max, 0.0))] * frames
    per_frame = [_frame_window(ds, f, window_index, path) for f in range(frames)]
    if all(w is not None for w in per_frame):
        image.voi = "window"
        image.window = per_frame[0][:2]
        return [windows.window_step(*w) for w in per_frame]
    image.voi = "minmax"
    low, high = _modality_range(stack, modality)
    image.window = ((low + high) / 2.0, high - low)
    return [windows.range_step(low, high)] * frames


def _frame_window(
    ds: Dataset, frame: int, index: int, path: str
) -> tuple[float, float, str] | None:
    """The file's (center, width, function) for ``frame``; None when absent or invalid."""
    item = _group_item(ds, frame, "FrameVOILUTSequence")
    source = item if item is not None and "WindowCenter" in item else ds
    center_el, width_el = source.get("WindowCenter"), source.get("WindowWidth")
    if center_el is None or width_el is None or center_el == "" or width_el == "":
        return None
    try:
        center, width = windows.pick_value(center_el, index), windows.pick_value(width_el, index)
    except IndexError as exc:
        raise DicomReadError(
            path, f"window_index {index} requested but the file holds fewer window values"
        ) from exc
    except (TypeError, ValueError):
        logger.warning("%s: WindowCenter/WindowWidth are not numbers; using min-max", path)
        return None
    function = str(source.get("VOILUTFunction", "") or "LINEAR").upper()
    if function not in windows.VOI_FUNCTIONS:
        logger.warning("%s: unknown VOILUTFunction; using LINEAR", path)
        function = "LINEAR"
    if not np.isfinite(center) or not windows.window_is_valid(width, function):
        logger.warning(
            "%s: window width %s is invalid for %s; using min-max", path, width, function
        )
        return None
    return center, width, function


def _color(
    image: DicomImage,
    ds: Dataset,
    arr: np.ndarray,
    props: dict,
    header: PixelHeader,
    color: str,
    output: str,
) -> None:
    path = image.path
    photometric = str(props.get("photometric_interpretation", header.photometric))
    scale = float(2**header.bits_stored - 1)
    if photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:
            raise DicomReadError(path, "the palette colour lookup tables are unusable") from exc
        scale = 255.0 if arr.dtype == np.uint8 else 65535.0  # LUT entries are 8 or 16 bits
    elif photometric in ("YBR_FULL", "YBR_FULL_422"):
        arr = convert_color_space(arr, photometric, "RGB")
    elif photometric != "RGB":
        raise DicomReadError(path, f"colour conversion from {photometric} to RGB is not supported")
    image.voi = "none"
    if output == "modality":
        rgb = arr.astype(np.float32)
    else:
        rgb = np.clip(arr.astype(np.float32) * np.float32(1.0 / scale), 0.0, 1.0)
    image.pixels = rgb if color == "rgb" else rgb @ LUMA_WEIGHTS
