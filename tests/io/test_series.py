"""read_series: grouping, geometric slice order, HU volumes and clear errors for bad geometry."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedCTImageStorage

from medvl.io.dicom import DicomReadError, hash_uid
from medvl.io.series import SeriesError, Volume, list_series, read_all_series, read_series

SERIES_UID = "1.2.826.0.1.3680043.8.498.1"
OBLIQUE = (
    np.cos(np.radians(30)),
    np.sin(np.radians(30)),
    0.0,
    0.0,
    0.0,
    -1.0,
)  # rows run in the axial plane at 30 degrees, columns run foot-wards: a tilted coronal slice


def _slice_hu(index: int, shape: tuple[int, int] = (6, 5)) -> np.ndarray:
    """Each slice holds a constant HU that encodes its true index (-1000 + 100 * k) plus a ramp."""
    return -1000 + 100 * index + np.arange(shape[0] * shape[1]).reshape(shape)


def _write_series(
    directory: Path,
    build_ct_slice,
    save_dataset,
    count: int = 7,
    step: float = 2.5,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    origin: tuple[float, float, float] = (-100.0, -120.0, 30.0),
    series_uid: str = SERIES_UID,
    seed: int = 0,
) -> list[Path]:
    """Write ``count`` slices along the normal in shuffled order under random file names."""
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    order = list(range(count))
    random.Random(seed).shuffle(order)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for written, k in enumerate(order):
        position = tuple(float(v) for v in np.asarray(origin) + k * step * normal)
        ds = build_ct_slice(
            _slice_hu(k), position, orientation, series_uid, instance=count - k
        )  # InstanceNumber deliberately reversed
        paths.append(save_dataset(ds, directory / f"{written:03d}_{random.Random(k).random():.6f}"))
    return paths


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), OBLIQUE])
def test_shuffled_series_sorts_by_position_along_the_normal(
    tmp_path, build_ct_slice, save_dataset, orientation
) -> None:
    _write_series(tmp_path / "ct", build_ct_slice, save_dataset, orientation=orientation)
    volume = read_series(tmp_path / "ct")
    assert volume.array.shape == (7, 6, 5) and volume.array.dtype == np.float32
    for k in range(7):
        np.testing.assert_array_equal(volume.array[k], _slice_hu(k))  # HU, in true order
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert volume.origin == pytest.approx((-100.0, -120.0, 30.0))
    normal = np.cross(orientation[:3], orientation[3:])
    np.testing.assert_allclose(
        volume.direction, [normal, orientation[3:], orientation[:3]], atol=1e-9
    )
    assert volume.modality == "CT" and volume.series_uid_hash == hash_uid(SERIES_UID)


def test_affine_maps_voxels_to_patient_positions(tmp_path, build_ct_slice, save_dataset) -> None:
    _write_series(tmp_path / "ct", build_ct_slice, save_dataset, orientation=OBLIQUE)
    volume = read_series(tmp_path / "ct")
    k, i, j = 3, 2, 4
    expected = (
        np.array([-100.0, -120.0, 30.0])
        + k * 2.5 * volume.direction[0]
        + i * 0.7 * np.asarray(OBLIQUE[3:])
        + j * 0.8 * np.asarray(OBLIQUE[:3])
    )
    np.testing.assert_allclose((volume.affine @ [k, i, j, 1])[:3], expected, atol=1e-9)


def test_folder_with_two_series_needs_a_choice(tmp_path, build_ct_slice, save_dataset) -> None:
    _write_series(tmp_path / "a", build_ct_slice, save_dataset, count=4)
    _write_series(tmp_path / "b", build_ct_slice, save_dataset, count=3, series_uid="1.2.3.99")
    (tmp_path / "DICOMDIR-like.txt").write_text("not an image")
    found = list_series(tmp_path)
    assert [(s.series_uid_hash, s.instances) for s in found] == [
        (hash_uid(SERIES_UID), 4),
        (hash_uid("1.2.3.99"), 3),
    ]
    with pytest.raises(SeriesError, match="holds 2 series"):
        read_series(tmp_path)
    assert read_series(tmp_path, hash_uid("1.2.3.99")).array.shape == (3, 6, 5)
    assert [v.array.shape[0] for v in read_all_series(tmp_path)] == [4, 3]
    with pytest.raises(SeriesError, match="no series with hash"):
        read_series(tmp_path, "0" * 16)


def _sorted_by_z(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))


def _duplicate(ds: Dataset, below: Dataset) -> None:
    ds.ImagePositionPatient = below.ImagePositionPatient


def _nudge(ds: Dataset, below: Dataset) -> None:
    ds.ImagePositionPatient = [-100.0, -120.0, float(ds.ImagePositionPatient[2]) + 0.7]


def _shift_sideways(ds: Dataset, below: Dataset) -> None:
    ds.ImagePositionPatient = [-90.0, -120.0, float(ds.ImagePositionPatient[2])]


def _tilt(ds: Dataset, below: Dataset) -> None:
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]


def _drop_spacing(ds: Dataset, below: Dataset) -> None:
    del ds.PixelSpacing


def _other_spacing(ds: Dataset, below: Dataset) -> None:
    ds.PixelSpacing = [0.9, 0.9]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (_tilt, "mixed orientations"),
        (_duplicate, "duplicate slice positions"),
        (_nudge, "irregular slice spacing"),
        (_shift_sideways, "not stacked along the slice normal"),
        (_drop_spacing, "lacks PixelSpacing"),
        (_other_spacing, "inconsistent PixelSpacing"),
    ],
)
def test_bad_geometry_raises_clear_errors(
    tmp_path, build_ct_slice, save_dataset, edit, problem
) -> None:
    paths = _sorted_by_z(_write_series(tmp_path / "ct", build_ct_slice, save_dataset, count=5))
    ds = pydicom.dcmread(paths[2])
    edit(ds, pydicom.dcmread(paths[1]))
    ds.save_as(paths[2])
    with pytest.raises(SeriesError, match=problem) as info:
        read_series(tmp_path / "ct")
    assert str(info.value).startswith(str(tmp_path / "ct"))


def test_missing_slice_is_reported_as_irregular(tmp_path, build_ct_slice, save_dataset) -> None:
    paths = _write_series(tmp_path / "ct", build_ct_slice, save_dataset, count=6)
    middle = _sorted_by_z(paths)[3]
    middle.write_bytes(middle.read_bytes()[:300])  # unreadable: skipped, leaves a gap
    with pytest.raises(SeriesError, match="irregular slice spacing"):
        read_series(tmp_path / "ct")


def test_inconsistent_shapes_raise(tmp_path, build_ct_slice, save_dataset) -> None:
    _write_series(tmp_path / "ct", build_ct_slice, save_dataset, count=3)
    extra = build_ct_slice(_slice_hu(3, shape=(4, 4)), (-100.0, -120.0, 37.5))
    save_dataset(extra, tmp_path / "ct" / "odd")
    with pytest.raises(SeriesError, match="inconsistent shapes"):
        read_series(tmp_path / "ct")


def test_empty_and_missing_folders(tmp_path) -> None:
    with pytest.raises(SeriesError, match="no readable DICOM image"):
        read_series(tmp_path)
    with pytest.raises(SeriesError, match="not a directory"):
        read_series(tmp_path / "absent")
    assert issubclass(SeriesError, DicomReadError)


def test_enhanced_multiframe_instance_becomes_a_volume(
    tmp_path, build_dataset, save_dataset
) -> None:
    stored = np.stack([(_slice_hu(k) + 1024).astype(np.uint16) for k in range(4)])
    ds = build_dataset(stored, bits_stored=12, modality="CT", sop_class=EnhancedCTImageStorage)
    groups = []
    for z in (7.5, 0.0, 2.5, 5.0):  # frames stored out of spatial order
        plane, transform, group = Dataset(), Dataset(), Dataset()
        plane.ImagePositionPatient = [0.0, 0.0, z]
        transform.RescaleSlope, transform.RescaleIntercept = 1, -1024
        group.PlanePositionSequence = [plane]
        group.PixelValueTransformationSequence = [transform]
        groups.append(group)
    shared, orientation, measures = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [0.5, 0.5]
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.SharedFunctionalGroupsSequence = [shared]
    save_dataset(ds, tmp_path / "enhanced.dcm")
    volume: Volume = read_series(tmp_path)
    assert volume.spacing == pytest.approx((2.5, 0.5, 0.5))
    for k, frame in enumerate([1, 2, 3, 0]):
        np.testing.assert_array_equal(volume.array[k], _slice_hu(frame))
