"""Phantom corpus: determinism, pixels agree with reports, DICOM reads back, masks align."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medvl.data.phantom import generate_phantoms, load_truth
from medvl.data.phantom.plan import DRAWABLE
from medvl.data.records import SegSample, Study, read_manifest
from medvl.findings import (
    ATELECTASIS,
    CARDIOMEGALY,
    CONSOLIDATION,
    EDEMA,
    FRACTURE,
    LUNG_LESION,
    LUNG_OPACITY,
    NO_FINDING,
    PLEURAL_EFFUSION,
    PLEURAL_OTHER,
    PNEUMONIA,
    PNEUMOTHORAX,
    SUPPORT_DEVICES,
)
from medvl.io.dicom import read_dicom

SIZE = 160
SEED = 3
MASK_PREFIX = {
    LUNG_LESION: "lung_lesion",
    PLEURAL_EFFUSION: "pleural_effusion",
    PNEUMOTHORAX: "pneumothorax",
    CONSOLIDATION: "consolidation",
    PNEUMONIA: "pneumonia",
    LUNG_OPACITY: "lung_opacity",
    ATELECTASIS: "atelectasis",
    EDEMA: "edema",
    PLEURAL_OTHER: "pleural_other",
    FRACTURE: "fracture",
    SUPPORT_DEVICES: "support_devices",
}


@pytest.fixture(scope="module")
def reports(iu_result) -> list[Study]:
    """Real IU reports covering every drawable finding, an uncertain label and a normal study."""
    studies = iu_result.studies
    chosen: list[Study] = []
    for finding in DRAWABLE:
        chosen.append(next(s for s in studies if s.labels.get(finding) == 1 and s not in chosen))
    chosen.append(next(s for s in studies if s.labels.get(CARDIOMEGALY) == -1))
    chosen.append(next(s for s in studies if s.labels.get(NO_FINDING) == 1))
    return chosen


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, reports) -> Path:
    out = tmp_path_factory.mktemp("phantom_a")
    generate_phantoms(
        len(reports), out, seed=SEED, size=SIZE, workers=1, studies=reports, progress=False
    )
    return out


@pytest.fixture(scope="module")
def studies(corpus) -> list[Study]:
    return read_manifest(corpus / "studies.jsonl", Study)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_same_seed_same_bytes_with_any_worker_count(corpus, reports, tmp_path):
    again = tmp_path / "b"
    generate_phantoms(
        len(reports), again, seed=SEED, size=SIZE, workers=2, studies=reports, progress=False
    )
    first, second = _files(corpus), _files(again)
    assert sorted(first) == sorted(second)
    for name in first:
        if name == "studies.jsonl" or name == "seg_samples.jsonl":  # hold absolute paths
            a = first[name].decode().replace(str(corpus), "ROOT")
            b = second[name].decode().replace(str(again), "ROOT")
            assert a == b, name
        else:
            assert first[name] == second[name], name


def test_another_seed_gives_other_images(corpus, reports, tmp_path):
    other = tmp_path / "c"
    generate_phantoms(
        2, other, seed=SEED + 1, size=SIZE, workers=1, studies=reports, progress=False
    )
    a = sorted((corpus / "images").rglob("*.dcm"))[0].read_bytes()
    b = sorted((other / "images").rglob("*.dcm"))[0].read_bytes()
    assert a != b


def test_drawn_findings_match_report_labels(corpus, studies):
    truth = load_truth(corpus)
    for study in studies:
        t = truth[study.study_id]
        drawn = set(t["drawn"])
        for finding in drawn:  # every drawn finding is in the report
            assert study.labels[finding] in (1, -1), (study.study_id, finding)
        for finding in DRAWABLE:  # every positive drawable finding is drawn
            if study.labels.get(finding) == 1:
                assert finding in drawn, (study.study_id, finding)
            if study.labels.get(finding) == -1:
                assert (finding in drawn) != (finding in t["uncertain_not_drawn"])
        if study.labels.get(NO_FINDING) == 1:
            assert not drawn
        frontal = t["images"][0]
        assert set(frontal["drawn"]) == drawn
        for image in t["images"][1:]:
            assert set(image["drawn"]) <= drawn


def test_finding_masks_exist_for_drawn_findings_only(corpus, studies):
    truth = load_truth(corpus)
    for study in studies:
        t = truth[study.study_id]
        frontal = study.images[0]
        for finding, prefix in MASK_PREFIX.items():
            has_mask = any(name.startswith(prefix) for name in frontal.masks)
            assert has_mask == (finding in t["drawn"]), (
                study.study_id,
                finding,
                sorted(frontal.masks),
            )
        assert {"lung_right", "lung_left", "heart"} <= set(frontal.masks)


def test_cardiothoracic_ratio_follows_cardiomegaly(studies, corpus):
    truth = load_truth(corpus)
    for study in studies:
        frontal = study.images[0]
        ctr = truth[study.study_id]["images"][0]["measures"]["ctr"]
        assert (ctr > 0.5) == (CARDIOMEGALY in truth[study.study_id]["drawn"]), (
            study.study_id,
            ctr,
        )
        masks = {k: np.asarray(Image.open(v)) > 0 for k, v in frontal.masks.items()}
        heart_cols = np.nonzero(masks["heart"].any(0))[0]
        lung_cols = np.nonzero((masks["lung_right"] | masks["lung_left"]).any(0))[0]
        measured = (heart_cols[-1] - heart_cols[0] + 1) / (lung_cols[-1] - lung_cols[0] + 1)
        assert abs(measured - ctr) < 0.04, (study.study_id, measured, ctr)


def test_dicom_files_are_valid_and_read_back(studies):
    photometrics: Counter[str] = Counter()
    for study in studies:
        for image in study.images:
            ds = pydicom.dcmread(image.path)
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.Modality in ("CR", "DX") and ds.Modality == image.modality
            assert 12 <= ds.BitsStored <= 16 and ds.BitsAllocated == 16
            assert ds.PhotometricInterpretation == image.photometric
            assert ds.PatientName.family_name == "PHANTOM"
            assert float(ds.PixelSpacing[0]) == pytest.approx(image.pixel_spacing[0], rel=1e-5)
            assert ds.ViewPosition == image.view_position
            assert "WindowCenter" in ds and "WindowWidth" in ds
            decoded = read_dicom(image.path)
            assert decoded.pixels.shape == (SIZE, SIZE)
            assert decoded.inverted == (image.photometric == "MONOCHROME1")
            assert decoded.pixels.min() >= 0.0 and decoded.pixels.max() <= 1.0
            photometrics[image.photometric] += 1
    assert len(studies) == 15
    # Each image copies its real IU header's interpretation (48% of those are MONOCHROME1):
    # both must be written, neither as a token few.
    assert set(photometrics) == {"MONOCHROME1", "MONOCHROME2"}, photometrics
    assert min(photometrics.values()) >= photometrics.total() / 4, photometrics


def test_masks_align_with_pixels(studies):
    for study in studies:
        for image in study.images:
            pixels = read_dicom(image.path).pixels
            masks = {k: np.asarray(Image.open(v)) > 0 for k, v in image.masks.items()}
            assert all(m.shape == pixels.shape for m in masks.values())
            lung = masks.get("lungs", masks.get("lung_right"))
            assert pixels[lung].mean() + 0.1 < pixels[masks["heart"]].mean(), image.image_id
            for name, mask in masks.items():
                if name.startswith(("pneumothorax", "lung_lesion")) and mask.sum() >= 4:
                    ring = _ring(mask) & (lung | masks.get("lung_left", lung))
                    if ring.sum() < 4:
                        continue
                    inside, around = pixels[mask].mean(), pixels[ring].mean()
                    if name.startswith("pneumothorax"):
                        assert inside < around, (image.image_id, name)
                    else:
                        assert inside > around, (image.image_id, name)


def _ring(mask: np.ndarray, width: int = 3) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=width) & ~mask


def test_manifests_load_and_point_at_files(corpus, studies):
    seg = read_manifest(corpus / "seg_samples.jsonl", SegSample)
    assert sum(len(i.masks) for s in studies for i in s.images) == len(seg)
    for sample in seg:
        assert Path(sample.image_path).is_file() and Path(sample.mask_path).is_file()
    for study in studies:
        assert study.source == "phantom_cxr" and study.split in ("train", "val", "test")
        assert study.model_text
        for image in study.images:
            assert Path(image.path).is_file() and len(image.content_hash) == 64


def test_views_follow_the_paired_real_study(studies, reports):
    from medvl.data.phantom.generate import study_views

    truth_views = {s.study_id: len(study_views(s)) for s in reports}
    counts = sorted(len(s.images) for s in studies)
    assert counts == sorted(truth_views.values())
    assert any(len(s.images) == 2 for s in studies)
    for study in studies:
        if len(study.images) == 2:
            assert study.images[0].view_position in ("PA", "AP")
            assert study.images[1].view_position in ("LL", "RL", "LATERAL")


def test_no_patient_identifiers_in_logs(reports, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        generate_phantoms(
            2, tmp_path / "d", seed=0, size=96, workers=1, studies=reports, progress=False
        )
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "PHANTOM^" not in text and "PHANTOM0000" not in text


@pytest.mark.slow
def test_cli_writes_manifests_and_config(tmp_path):
    from typer.testing import CliRunner

    from medvl.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["data", "phantom", "--n", "2", "--out", str(out), "--size", "96", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    studies = read_manifest(out / "studies.jsonl", Study)
    assert len(studies) == 2 and all(s.images for s in studies)
    assert "n_studies: 2" in (out / "config.yaml").read_text()
    bad = CliRunner().invoke(app, ["data", "phantom", "--n", "0", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "n_studies" in bad.output  # a config error, before any work
