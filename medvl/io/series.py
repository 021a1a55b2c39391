"""Group DICOM instances into series and stack CT/MR slices into volumes in modality units.

A folder from a PACS export holds many files in no useful order, sometimes several series. This
module scans headers only (``read_dicom(..., decode=False)``), groups by SeriesInstanceUID,
orders slices by their position along the slice normal (the projection of ImagePositionPatient
on the cross product of the ImageOrientationPatient cosines; file names and InstanceNumber are
not trusted) and decodes the chosen series into a (Z, H, W) float32 volume in modality units
(HU for CT). Enhanced multi-frame instances contribute one slice per frame, placed by their
per-frame Plane Position.

API: :func:`list_series` (headers only), :func:`read_series` (one volume; the series must be
named by its hash when the folder holds more than one) and :func:`read_all_series`.
Geometry that cannot form a regular grid (mixed orientations, duplicate or irregular slice
spacing, differing shapes or pixel spacing, slices not stacked along the normal) raises
:class:`SeriesError` naming the folder and the problem.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvl.io.dicom import DicomImage, DicomReadError, read_dicom

__all__ = [
    "SeriesError",
    "SeriesInfo",
    "Volume",
    "assemble_series",
    "list_series",
    "read_all_series",
    "read_series",
]

logger = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-3  # direction-cosine difference accepted as the same orientation
SPACING_TOLERANCE = 0.01  # relative deviation of a slice step from the median step


class SeriesError(DicomReadError):
    """A folder's instances cannot be assembled into one regular volume."""


@dataclass
class SeriesInfo:
    """Header-only summary of one series found in a folder."""

    series_uid_hash: str
    modality: str
    paths: list[str] = field(default_factory=list)
    images: list[DicomImage] = field(default_factory=list, repr=False)

    @property
    def instances(self) -> int:
        """Number of files in the series."""
        return len(self.paths)


@dataclass
class Volume:
    """A regular 3D grid of modality values with its patient-space geometry.

    ``array`` is (Z, H, W) float32 (HU for CT). ``spacing`` is (z, y, x) in mm: slice step, row
    spacing, column spacing. ``origin`` is the patient (LPS) position of voxel (0, 0, 0) and
    ``direction`` is 3 x 3 whose rows are the unit patient vectors of the array axes in array
    order: slice normal, column direction (down the rows), row direction (along a row).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    series_uid_hash: str
    modality: str
    orientation: tuple[float, ...]
    paths: tuple[str, ...]

    @property
    def affine(self) -> np.ndarray:
        """4 x 4 matrix mapping (z, y, x, 1) voxel indices to patient (x, y, z, 1) in mm."""
        return voxel_affine(self.direction, self.spacing, self.origin)


def voxel_affine(
    direction: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> np.ndarray:
    """4 x 4 matrix mapping (z, y, x, 1) voxel indices to patient (x, y, z, 1) in mm.

    ``direction`` rows are the patient-space unit vectors of the z, y and x voxel axes,
    ``spacing`` their steps in mm and ``origin`` the position of voxel (0, 0, 0).
    """
    matrix = np.eye(4)
    matrix[:3, :3] = (direction * np.asarray(spacing)[:, None]).T
    matrix[:3, 3] = origin
    return matrix


@dataclass(frozen=True)
class _Slice:
    path: str
    frame: int | None  # None: the whole single-frame instance
    position: np.ndarray
    image: DicomImage


def list_series(directory: str | os.PathLike) -> list[SeriesInfo]:
    """Scan a folder (recursively) and group readable image files by series, headers only.

    Files that are not readable DICOM images (DICOMDIR, reports, broken files) are skipped with a
    warning; a slice lost this way shows up later as a gap in the slice spacing.
    """
    root = Path(directory)
    if not root.is_dir():
        raise SeriesError(root, "is not a directory")
    groups: dict[str, SeriesInfo] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            image = read_dicom(path, decode=False)
        except DicomReadError as err:
            logger.warning("skipping %s", err)
            continue
        info = groups.setdefault(
            image.series_uid_hash, SeriesInfo(image.series_uid_hash, image.modality)
        )
        info.paths.append(str(path))
        info.images.append(image)
    return sorted(groups.values(), key=lambda s: (-s.instances, s.series_uid_hash))


def read_series(directory: str | os.PathLike, series_uid_hash: str | None = None) -> Volume:
    """Read one series from a folder as a volume in modality units (HU for CT).

    Parameters
    ----------
    directory
        Folder holding the instances (any depth, any file names).
    series_uid_hash
        ``hash_uid`` of the SeriesInstanceUID to read; may be omitted when the folder holds one
        series only.

    Raises
    ------
    SeriesError
        No image series, an ambiguous or unknown series, or geometry that is not a regular grid.
    DicomReadError
        A slice of the series cannot be decoded.
    """
    found = list_series(directory)
    if not found:
        raise SeriesError(directory, "holds no readable DICOM image")
    if series_uid_hash is None:
        if len(found) > 1:
            hashes = ", ".join(s.series_uid_hash or "(no UID)" for s in found)
            raise SeriesError(
                directory, f"holds {len(found)} series ({hashes}); pass series_uid_hash"
            )
        return _assemble(directory, found[0])
    for info in found:
        if info.series_uid_hash == series_uid_hash:
            return _assemble(directory, info)
    raise SeriesError(directory, f"holds no series with hash {series_uid_hash}")


def read_all_series(directory: str | os.PathLike) -> list[Volume]:
    """Read every series in a folder (largest first); any series that fails raises."""
    return [_assemble(directory, info) for info in list_series(directory)]


def assemble_series(info: SeriesInfo, where: str | os.PathLike) -> Volume:
    """Stack a series the caller grouped itself (a listener's file list); ``where`` names it
    in errors instead of a folder (whose name may carry identifiers)."""
    return _assemble(where, info)


def _assemble(directory: str | os.PathLike, info: SeriesInfo) -> Volume:
    slices = _slices(directory, info)
    first = slices[0].image
    orientation = np.asarray(first.image_orientation, dtype=np.float64)
    row_dir, col_dir = _unit(orientation[:3]), _unit(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    _check_same_plane(directory, slices, orientation)
    slices.sort(key=lambda s: float(s.position @ normal))
    distances = np.array([s.position @ normal for s in slices])
    step = _slice_step(directory, distances, first)
    _check_stacked(directory, slices, row_dir, col_dir, first.pixel_spacing)
    array = _decode(slices)
    row_spacing, col_spacing = first.pixel_spacing
    return Volume(
        array=array,
        spacing=(step, row_spacing, col_spacing),
        origin=tuple(float(v) for v in slices[0].position),
        direction=np.stack([normal, col_dir, row_dir]),
        series_uid_hash=info.series_uid_hash,
        modality=info.modality,
        orientation=tuple(float(v) for v in orientation),
        paths=tuple(dict.fromkeys(s.path for s in slices)),
    )


def _slices(directory: str | os.PathLike, info: SeriesInfo) -> list[_Slice]:
    slices: list[_Slice] = []
    for path, image in zip(info.paths, info.images, strict=True):
        name = Path(path).name
        if not image.photometric.startswith("MONOCHROME"):
            raise SeriesError(directory, f"{name} is {image.photometric}; volumes need grayscale")
        cosines = image.image_orientation
        if cosines is None:
            raise SeriesError(directory, f"{name} lacks ImageOrientationPatient")
        row, col = np.asarray(cosines[:3]), np.asarray(cosines[3:])
        if not np.allclose([row @ row, col @ col], 1.0, atol=1e-2) or abs(row @ col) > 1e-2:
            raise SeriesError(
                directory,
                f"{name} has an ImageOrientationPatient that is not two orthogonal unit vectors",
            )
        if image.pixel_spacing is None:
            raise SeriesError(directory, f"{name} lacks PixelSpacing")
        if image.frames > 1:
            positions = image.frame_positions or ()
            if len(positions) != image.frames or any(p is None for p in positions):
                raise SeriesError(
                    directory,
                    f"{name} has {image.frames} frames without a per-frame ImagePositionPatient",
                )
            slices += [_Slice(path, i, np.asarray(p), image) for i, p in enumerate(positions)]
        elif image.image_position is None:
            raise SeriesError(directory, f"{name} lacks ImagePositionPatient")
        else:
            slices.append(_Slice(path, None, np.asarray(image.image_position), image))
    return slices


def _check_same_plane(
    directory: str | os.PathLike, slices: list[_Slice], orientation: np.ndarray
) -> None:
    first = slices[0].image
    for s in slices[1:]:
        other = np.asarray(s.image.image_orientation)
        if np.max(np.abs(other - orientation)) > ORIENTATION_TOLERANCE:
            raise SeriesError(
                directory, "mixed orientations: ImageOrientationPatient differs between slices"
            )
        if (s.image.rows, s.image.columns) != (first.rows, first.columns):
            raise SeriesError(
                directory,
                f"inconsistent shapes: {first.rows}x{first.columns} and "
                f"{s.image.rows}x{s.image.columns} slices in one series",
            )
        if not np.allclose(s.image.pixel_spacing, first.pixel_spacing, rtol=1e-3):
            raise SeriesError(directory, "inconsistent PixelSpacing between slices")


def _slice_step(directory: str | os.PathLike, distances: np.ndarray, first: DicomImage) -> float:
    """The regular slice step in mm; a single slice uses SliceThickness (else 1 mm)."""
    if len(distances) == 1:
        return float(first.slice_thickness or 1.0)
    steps = np.diff(distances)
    median = float(np.median(steps))
    if np.min(steps) < 1e-3 * max(median, 1e-3) or median <= 0:
        raise SeriesError(directory, "duplicate slice positions: two slices share one position")
    deviation = np.max(np.abs(steps - median))
    if deviation > SPACING_TOLERANCE * median:
        raise SeriesError(
            directory,
            f"irregular slice spacing: steps range {steps.min():.3f} to "
            f"{steps.max():.3f} mm (missing or extra slices?)",
        )
    return float(np.mean(steps))


def _check_stacked(
    directory: str | os.PathLike,
    slices: list[_Slice],
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    pixel_spacing: tuple[float, float],
) -> None:
    """Slices must sit on the normal through the first one (no gantry tilt or shear)."""
    offsets = np.array([s.position - slices[0].position for s in slices])
    in_plane = np.abs(np.stack([offsets @ row_dir, offsets @ col_dir], axis=1))
    if np.max(in_plane) > 0.5 * min(pixel_spacing):
        raise SeriesError(
            directory,
            "slices are not stacked along the slice normal (gantry tilt or sheared "
            "acquisition); resample before reading as a volume",
        )


def _decode(slices: list[_Slice]) -> np.ndarray:
    """Decode each file once, in modality units, and place its frames in sorted order."""
    by_path: dict[str, list[tuple[int, int | None]]] = defaultdict(list)
    for index, s in enumerate(slices):
        by_path[s.path].append((index, s.frame))
    first = slices[0].image
    volume = np.empty((len(slices), first.rows, first.columns), dtype=np.float32)
    for path, targets in by_path.items():
        pixels = read_dicom(path, output="modality").pixels
        for index, frame in targets:
            volume[index] = pixels if frame is None else pixels[frame]
    return volume


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector
