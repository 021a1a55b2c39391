"""A generic image/mask folder -> SegSample records (DICOM or NIfTI images, NIfTI/PNG masks).

Layouts read (a case is a file name without its extension; ``.nii.gz`` counts as one)::

    ROOT/images/<case>.dcm|.nii.gz|.nii|.png|.npy    ROOT/masks/<case>.png|.nii.gz|.nii|.npy
    ROOT/images/<case>/  (a folder of DICOM files: one CT/MR series)
    ROOT/masks/<case>/<structure>.png|.nii.gz         (one binary mask per structure)
    ROOT/imagesTr/<case>_0000.nii.gz + ROOT/labelsTr/<case>.nii.gz   (nnU-Net)

A mask file is a label map: every non-zero value is one structure, named by ``labels``
(``{1: "liver"}``) or ``label_<value>``; a binary mask (values 0/1 or 0/255) is the single
structure ``structure``. One SegSample is written per (image, structure); 2-D masks go to
``OUT/masks/<case>/<structure>.png``. Volumes become slices: the windowed slice
(``OUT/slices/<case>/<z>.npy``, float32 in [0, 1]) and its mask PNG, for the slices holding the
structure (``include_empty`` adds the others, as empty-ground-truth samples).

NIfTI geometry: arrays are reoriented to the closest canonical (RAS+) orientation and laid out
as DICOM axial slices, rows running anterior -> posterior and columns patient right -> left
(the radiological display of an LPS axial series), so a NIfTI mask drawn on a DICOM series
lies on it. Spacing comes from the header zooms (DICOM: PixelSpacing).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvl.data.records import SegSample, split_of
from medvl.data.sources.common import SourceResult, write_mask_png

log = logging.getLogger(__name__)

SOURCE = "mask_folder"
IMAGE_DIRS = ("images", "imagesTr")
MASK_DIRS = ("masks", "labelsTr", "labels")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png", ".npy", ".tif", ".tiff", ".jpg", ".jpeg")
MASK_SUFFIXES = (".nii.gz", ".nii", ".png", ".npy", ".tif", ".tiff")
NNUNET_CHANNEL = re.compile(r"_0000$")
PERCENTILES = (0.5, 99.5)

Window = tuple[float, float] | str | None


@dataclass
class SegImage:
    """Gray pixels in [0, 1]: (H, W) or (Z, H, W); spacing in mm, (row, col) or (z, row, col)."""

    pixels: np.ndarray
    spacing: tuple[float, ...] | None


def case_name(path: str | Path) -> str:
    """File or folder name without its image extension (and nnU-Net's ``_0000`` channel tag)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return NNUNET_CHANNEL.sub("", name)


def _is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A NIfTI file as a (Z, H, W) array in display layout and its (z, row, col) spacing."""
    import nibabel as nib

    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError ...
        raise ValueError(f"{path}: not a readable NIfTI file ({type(err).__name__})") from None
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: NIfTI array has shape {data.shape}; 2-D or 3-D expected")
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    display = np.ascontiguousarray(data[::-1, ::-1, :].transpose(2, 1, 0))
    return display, (zooms[2], zooms[1], zooms[0])


def scale_to_unit(values: np.ndarray, window: Window = None) -> np.ndarray:
    """Modality values -> float32 [0, 1] with a window (center, width) or CT preset name.

    Without a window the 0.5th-99.5th percentiles map to 0 and 1 (MedSAM's choice for MR).
    """
    from medvl.io.windows import apply_window, range_step, resolve_window

    values = np.asarray(values, dtype=np.float32)
    if window is not None:
        center, width, _ = resolve_window(window)
        return apply_window(values, center, width, "LINEAR_EXACT")
    low, high = np.percentile(values, PERCENTILES) if values.size else (0.0, 0.0)
    out = range_step(float(low), float(high))(values).astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


def read_seg_image(path: str | os.PathLike, window: Window = None) -> SegImage:
    """Read an image for segmentation: DICOM, NIfTI, a DICOM series folder, PNG/JPEG or .npy.

    DICOM and PNG go through the pixel pipeline (:func:`medvl.data.transforms.read_radiograph`:
    modality LUT, VOI, MONOCHROME1); NIfTI and series are in modality units and are windowed
    with ``window`` (percentiles without). A ``.npy`` holds float [0, 1] pixels already.
    """
    path = Path(path)
    if path.is_dir():
        from medvl.io.series import read_series

        volume = read_series(path)
        return SegImage(scale_to_unit(volume.array, window), tuple(volume.spacing))
    if not path.is_file():
        raise ValueError(f"{path}: image file does not exist")
    if _is_nifti(path):
        data, spacing = read_nifti(path)
        pixels = scale_to_unit(data, window)
        return SegImage(
            pixels[0] if pixels.shape[0] == 1 else pixels,
            spacing if pixels.shape[0] > 1 else spacing[1:],
        )
    if path.suffix.lower() == ".npy":
        pixels = np.load(path, allow_pickle=False).astype(np.float32)
        if pixels.min(initial=0.0) < 0 or pixels.max(initial=0.0) > 1:
            pixels = scale_to_unit(pixels, window)
        return SegImage(pixels, None)
    from medvl.data.transforms import read_radiograph
    from medvl.io.dicom import DicomReadError

    try:
        pixels, meta = read_radiograph(path, window=window, frame=None)
    except DicomReadError as err:
        raise ValueError(str(err)) from None
    spacing = meta.get("pixel_spacing")
    return SegImage(
        pixels[0] if pixels.shape[0] == 1 else pixels, tuple(spacing) if spacing else None
    )


def read_gray(path: str, window: Window = None) -> np.ndarray:
    """Just the (H, W) pixels of :func:`read_seg_image` (a picklable reader for loaders)."""
    pixels = read_seg_image(path, window).pixels
    if pixels.ndim != 2:
        raise ValueError(f"{path}: a 2-D image is needed here, got shape {pixels.shape}")
    return pixels


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A label mask as int32, (H, W) for PNG/.npy/2-D NIfTI, (Z, H, W) for 3-D NIfTI.

    A binary 0/255 PNG becomes 0/1.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: mask file does not exist")
    if _is_nifti(path):
        data, _ = read_nifti(path)
        if not np.allclose(data, np.round(data)):
            raise ValueError(f"{path}: mask holds non-integer values; a label map is expected")
        labels = np.round(data).astype(np.int32)
        return labels[0] if labels.shape[0] == 1 else labels
    if path.suffix.lower() == ".npy":
        labels = np.load(path, allow_pickle=False)
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                labels = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I", "P") else im)
        except (OSError, SyntaxError) as err:
            raise ValueError(f"{path}: not a readable mask image ({type(err).__name__})") from None
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: mask has shape {labels.shape}; a 2-D mask is expected")
    labels = labels.astype(np.int32)
    if set(np.unique(labels).tolist()) <= {0, 255}:
        labels = (labels > 0).astype(np.int32)
    return labels


def structure_masks(
    labels: np.ndarray, structure: str, names: Mapping[int, str] | None
) -> dict[str, np.ndarray]:
    """Split a label map into binary masks by structure name."""
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        return {}
    if values == [1] and not (names and 1 in names):
        return {structure: labels == 1}
    return {(names or {}).get(v, f"label_{v}"): labels == v for v in values}


def _find(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or entry.name.lower().endswith(suffixes):
            found.setdefault(case_name(entry), entry)
    return found


def _layout(root: Path) -> tuple[Path, Path]:
    images = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    masks = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
    if images is None or masks is None:
        raise FileNotFoundError(
            f"{root}: expected an images folder ({' or '.join(IMAGE_DIRS)}) and a masks folder "
            f"({' or '.join(MASK_DIRS)})"
        )
    return images, masks


def _case_masks(
    mask_entry: Path, structure: str, names: Mapping[int, str] | None
) -> dict[str, np.ndarray]:
    if mask_entry.is_dir():
        out = {}
        for file in sorted(mask_entry.iterdir()):
            if file.name.lower().endswith(MASK_SUFFIXES):
                out[case_name(file)] = read_mask(file) != 0
        return out
    return structure_masks(read_mask(mask_entry), structure, names)


def load_mask_folder(
    root: str | Path,
    out_dir: str | Path,
    structure: str = "foreground",
    labels: Mapping[int, str] | None = None,
    window: Window = None,
    include_empty: bool = False,
    seed: int = 0,
) -> SourceResult:
    """Read an image/mask folder into SegSamples (see the module docstring for layouts).

    Cases whose image or mask cannot be read, whose shapes differ, or that have no mask are
    recorded as failures; the rest are read. The split is by case name (``split_of``).
    """
    root, out_dir = Path(root), Path(out_dir)
    image_dir, mask_dir = _layout(root)
    images, masks = _find(image_dir, IMAGE_SUFFIXES), _find(mask_dir, MASK_SUFFIXES)
    result = SourceResult(source=SOURCE)
    for case in sorted(set(images) - set(masks)):
        result.fail(images[case], "no mask for this image")
    for case in sorted(set(images) & set(masks)):
        try:
            image = read_seg_image(images[case], window)
            per_structure = _case_masks(masks[case], structure, labels)
        except ValueError as err:
            result.fail(images[case], str(err))
            continue
        mismatch = [n for n, m in per_structure.items() if m.shape != image.pixels.shape]
        if mismatch:
            shape = per_structure[mismatch[0]].shape
            result.fail(masks[case], f"mask shape {shape} != image shape {image.pixels.shape}")
            continue
        if not per_structure:
            result.fail(masks[case], "mask is empty (no structure labelled)")
            continue
        split = split_of(case, seed=seed)
        if image.pixels.ndim == 2:
            _add_2d(result, case, images[case], image, per_structure, out_dir, split)
        else:
            _add_volume(result, case, image, per_structure, out_dir, split, include_empty)
    result.log_summary(log)
    return result


def _add_2d(
    result: SourceResult,
    case: str,
    image_path: Path,
    image: SegImage,
    per_structure: dict[str, np.ndarray],
    out_dir: Path,
    split: str,
) -> None:
    for name, mask in per_structure.items():
        mask_path = write_mask_png(out_dir / "masks" / case / f"{name}.png", mask)
        result.seg_samples.append(
            SegSample(
                image_path=str(image_path),
                mask_path=str(mask_path),
                structure=name,
                image_id=case,
                patient_key=case,
                pixel_spacing=image.spacing[-2:] if image.spacing else None,
                split=split,
            )
        )


def _add_volume(
    result: SourceResult,
    case: str,
    image: SegImage,
    per_structure: dict[str, np.ndarray],
    out_dir: Path,
    split: str,
    include_empty: bool,
) -> None:
    written: dict[int, Path] = {}
    spacing = image.spacing[-2:] if image.spacing else None
    for name, mask in per_structure.items():
        present = np.any(mask, axis=(1, 2))
        for z in range(mask.shape[0]):
            if not (present[z] or include_empty):
                continue
            if z not in written:
                written[z] = out_dir / "slices" / case / f"{z:04d}.npy"
                written[z].parent.mkdir(parents=True, exist_ok=True)
                np.save(written[z], image.pixels[z].astype(np.float32))
            mask_path = write_mask_png(out_dir / "masks" / case / name / f"{z:04d}.png", mask[z])
            result.seg_samples.append(
                SegSample(
                    image_path=str(written[z]),
                    mask_path=str(mask_path),
                    structure=name,
                    image_id=f"{case}:z{z:04d}",
                    patient_key=case,
                    pixel_spacing=spacing,
                    split=split,
                )
            )
