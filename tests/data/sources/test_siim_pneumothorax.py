"""SIIM RLE codec (checked against the real SIIM file) and the SIIM tree adapter."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from medvl.data.sources.assets import SIIM_RLE, asset_path
from medvl.data.sources.siim_pneumothorax import (
    decode_image_masks,
    load_siim,
    read_rle_table,
    rle_decode,
    rle_encode,
)
from medvl.findings import PNEUMOTHORAX


@pytest.fixture(scope="module")
def real_table() -> dict[str, list[str]]:
    table, problems = read_rle_table(asset_path(SIIM_RLE))
    assert problems == []
    return table


def test_convention_is_column_major_with_relative_gaps() -> None:
    mask = np.zeros((3, 3), bool)
    mask[1, 0] = True  # flat index 1 in column-major order
    assert rle_encode(mask) == "1 1"
    mask[0, 1] = True  # flat index 3: gap counted from the end of the first run (2)
    assert rle_encode(mask) == "1 1 1 1"
    np.testing.assert_array_equal(rle_decode("1 1 1 1", (3, 3)), mask)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 48), (128, 128)])
def test_random_masks_round_trip(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.05, 0.5, 0.95, 1.0):
        mask = rng.random(shape) < density
        rle = rle_encode(mask)
        np.testing.assert_array_equal(rle_decode(rle, shape), mask)
        assert rle_encode(rle_decode(rle, shape)) == rle


def test_edge_runs_and_empty() -> None:
    mask = np.zeros((4, 4), bool)
    assert rle_encode(mask) == "-1"
    assert not rle_decode("-1", (4, 4)).any() and not rle_decode(" ", (4, 4)).any()
    mask[0, 0] = mask[3, 3] = True
    assert rle_encode(mask) == "0 1 14 1"
    assert rle_encode(np.ones((2, 2))) == "0 4"


@pytest.mark.parametrize(
    ("rle", "words"),
    [("1 2 3", "pairs"), ("1 -2", "negative"), ("10 7", "runs to pixel 17"), ("a 1", "integer")],
)
def test_malformed_rle_is_rejected(rle: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        rle_decode(rle, (4, 4))


def test_real_rle_strings_re_encode_bytewise(real_table: dict[str, list[str]]) -> None:
    strings = [rle for runs in real_table.values() for rle in runs]
    assert len(real_table) == 12047 and len(strings) == 3576
    for rle in strings[::25]:
        assert rle_encode(rle_decode(rle, (1024, 1024))) == rle


def test_real_masks_are_anatomically_plausible(real_table: dict[str, list[str]]) -> None:
    positive = sorted(k for k, v in real_table.items() if v)
    assert len(positive) == 2669
    first = decode_image_masks(real_table[positive[0]], (1024, 1024))
    rows, cols = np.nonzero(first)
    assert first.sum() == 6682 and ndi.label(first)[1] == 1
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (148, 233, 204, 417)
    upper, lateral = [], []
    for image_id in positive[::40]:
        mask = decode_image_masks(real_table[image_id], (1024, 1024))
        rows, cols = np.nonzero(mask)
        assert 0.0001 < mask.mean() < 0.2
        upper.append(rows.mean() < 512)
        lateral.append(abs(cols.mean() - 512) > 50)
    # Pneumothorax collects at the apex and the lateral chest wall, beside (not on) the midline;
    # a row-major decode would transpose these shapes onto the image's upper / lower edge.
    assert np.mean(upper) > 0.75 and np.mean(lateral) > 0.85


def test_adapter_reads_tree_and_records_failures(tmp_path, make_dicom) -> None:
    root = tmp_path / "siim"
    pos = make_dicom(root / "dicom-images-train" / "st1" / "se1" / "img.pos.dcm", 16, 12, "P1")
    make_dicom(root / "dicom-images-train" / "st2" / "se2" / "img.neg.dcm", 16, 12, "P2")
    make_dicom(root / "dicom-images-train" / "st3" / "se3" / "img.norow.dcm", 16, 12, "P3")
    make_dicom(root / "dicom-images-train" / "st4" / "se4" / "img.badrle.dcm", 16, 12, "P4")
    (root / "dicom-images-train" / "img.broken.dcm").write_bytes(b"not a dicom file")
    region_a = np.zeros((16, 12), bool)
    region_a[2:5, 3:6] = True
    region_b = np.zeros((16, 12), bool)
    region_b[10:14, 8:10] = True
    (root / "train-rle.csv").write_text(
        "ImageId, EncodedPixels\n"
        f"img.pos, {rle_encode(region_a)}\n"
        f"img.pos, {rle_encode(region_b)}\n"
        "img.neg, -1\n"
        "img.badrle, 1 2 3\n"
        "img.broken, -1\n"
        "img.nofile, -1\n"
        ",\n"
    )
    result = load_siim(root, tmp_path / "out")
    by_id = {s.images[0].image_id: s for s in result.studies}
    assert set(by_id) == {"img.pos", "img.neg"}
    assert by_id["img.pos"].labels == {PNEUMOTHORAX: 1}
    assert by_id["img.neg"].labels == {PNEUMOTHORAX: 0}
    assert by_id["img.pos"].patient_key != by_id["img.neg"].patient_key
    assert "P1" not in by_id["img.pos"].patient_key
    sample = next(s for s in result.seg_samples if s.image_id == "img.pos")
    assert sample.image_path == str(pos) and sample.pixel_spacing == (0.2, 0.2)
    written = np.asarray(Image.open(sample.mask_path))
    np.testing.assert_array_equal(written == 255, region_a | region_b)
    assert set(np.unique(written)) == {0, 255}
    reasons = {f.path.rsplit("/", 1)[-1]: f.reason for f in result.failures}
    assert "no row" in reasons["img.norow.dcm"]
    assert "pairs" in reasons["img.badrle.dcm"]
    assert "img.broken.dcm" in reasons
    assert any("no DICOM" in f.reason for f in result.failures)
    assert any("no ImageId" in f.reason for f in result.failures)
    assert len(result.failures) == 5

    positives_only = load_siim(root, tmp_path / "out2", include_empty=False)
    assert [s.image_id for s in positives_only.seg_samples] == ["img.pos"]
    assert len(positives_only.studies) == 2


def test_missing_rle_csv_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="train-rle.csv"):
        load_siim(tmp_path, tmp_path / "out")
