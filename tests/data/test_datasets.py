"""Pair and segmentation datasets: item contents, label encoding, collation, tokenization."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from transformers import BertTokenizerFast

from medvl.data.batch_augment import BatchAugment
from medvl.data.cache import build_cache
from medvl.data.datasets import PairDataset, SegDataset, collate_pairs, label_vector
from medvl.data.records import ImageRecord, ImageReportPair, SegSample
from medvl.data.transforms import PipelineConfig, augment_transforms, eval_transforms
from medvl.findings import CARDIOMEGALY, CHEXPERT_14, EDEMA, NO_FINDING, PNEUMOTHORAX

TEXTS = ["no pneumothorax", "mild cardiomegaly with small effusion and edema"]


@pytest.fixture
def pairs(write_xray) -> list[ImageReportPair]:
    labels = [{NO_FINDING: 1, PNEUMOTHORAX: 0}, {CARDIOMEGALY: 1, EDEMA: -1}]
    out = []
    for i, (text, lab) in enumerate(zip(TEXTS, labels, strict=True)):
        path = write_xray(f"p{i}.dcm", seed=i, shape=(50, 40))
        record = ImageRecord(path=str(path), image_id=f"img{i}")
        out.append(
            ImageReportPair(image=record, study_id=f"s{i}", patient_key="k", text=text, labels=lab)
        )
    return out


@pytest.fixture
def tokenizer() -> BertTokenizerFast:
    words = sorted({w for t in TEXTS for w in t.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def test_label_vector_encodes_present_negated_uncertain_and_unmentioned():
    vec = label_vector({CARDIOMEGALY: 1, EDEMA: -1, PNEUMOTHORAX: 0, NO_FINDING: None})
    assert vec.shape == (14,) and vec.dtype == torch.float32
    assert vec[CHEXPERT_14.index(CARDIOMEGALY)] == 1
    assert vec[CHEXPERT_14.index(EDEMA)] == -1
    assert vec[CHEXPERT_14.index(PNEUMOTHORAX)] == 0
    assert torch.isnan(vec[CHEXPERT_14.index(NO_FINDING)])
    assert int(torch.isnan(vec).sum()) == 11


def test_pair_item_contents(pairs):
    dataset = PairDataset(pairs, eval_transforms(32))
    item = dataset[1]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["text"] == TEXTS[1] and item["image_id"] == "img1" and item["study_id"] == "s1"
    assert item["labels"][CHEXPERT_14.index(EDEMA)] == -1
    assert len(dataset) == 2


def test_pair_dataset_needs_a_way_to_load_images(pairs):
    with pytest.raises(ValueError, match="transform"):
        PairDataset(pairs)


def test_augment_runs_after_loading(pairs):
    augment = augment_transforms(prob=1.0, brightness=0.5, size=32)
    augment.set_random_state(0)
    plain = PairDataset(pairs, eval_transforms(32))[0]["image"]
    varied = PairDataset(pairs, eval_transforms(32), augment=augment)[0]["image"]
    assert varied.shape == plain.shape and not torch.equal(varied, plain)


def test_collate_without_and_with_tokenizer(pairs, tokenizer):
    dataset = PairDataset(pairs, eval_transforms(32), tokenizer=tokenizer, max_length=6)
    batch = collate_pairs([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 1, 32, 32) and batch["labels"].shape == (2, 14)
    assert batch["text"] == TEXTS and "input_ids" not in batch

    loader = DataLoader(dataset, batch_size=2, collate_fn=dataset.collate)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 6)  # truncated
    first = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert first[:4] == ["[CLS]", "no", "pneumothorax", "[SEP]"]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert math.isnan(batch["labels"][0, CHEXPERT_14.index(EDEMA)])


def test_loader_only_stacks_and_on_device_augments(pairs):
    augment = BatchAugment(prob=1.0, brightness=0.5)
    dataset = PairDataset(pairs, eval_transforms(32), batch_augment=augment)
    batch = next(iter(DataLoader(dataset, batch_size=2, collate_fn=dataset.collate)))
    plain = collate_pairs([dataset[0], dataset[1]])
    assert torch.equal(batch["image"], plain["image"])  # the loader leaves images as stored
    augmented = dataset.on_device(batch)
    assert torch.equal(augmented["image"], augment(plain["image"], ["img0", "img1"]))
    assert not torch.equal(augmented["image"], plain["image"])
    assert augmented["text"] == TEXTS and torch.equal(batch["image"], plain["image"])
    unaugmented = PairDataset(pairs, eval_transforms(32))
    assert unaugmented.on_device(batch) is batch


def test_as_stored_serves_float16_and_on_device_casts_exactly(pairs, tmp_path):
    pipeline = PipelineConfig(size=32)
    built = build_cache([p.image for p in pairs[:1]], tmp_path, pipeline, dtype="float16")
    stored = PairDataset(pairs, cache=built.cache, as_stored=True)  # pairs[1] is a cache miss
    plain = PairDataset(pairs, cache=built.cache)
    batch = collate_pairs([stored[0], stored[1]])
    assert batch["image"].dtype == torch.float16  # half the bytes through the loader
    on_device = stored.on_device(batch)["image"]
    assert on_device.dtype == torch.float32
    reference = collate_pairs([plain[0], plain[1]])["image"]
    assert torch.equal(on_device[0], reference[0])  # float16 -> float32 is exact
    torch.testing.assert_close(on_device[1], reference[1], atol=1e-3, rtol=0)  # miss: rounded


def test_uint8_training_batch_on_device_matches_float32_within_half_a_step(pairs, tmp_path):
    pipeline = PipelineConfig(size=32)
    images = [p.image for p in pairs]
    exact = build_cache(images, tmp_path, pipeline).cache
    small = build_cache(images[:1], tmp_path, pipeline, dtype="uint8").cache  # pairs[1] misses
    geometric = BatchAugment(prob=1.0, brightness=0.0, contrast=(1.0, 1.0))
    half_step = 1 / 510 + 1e-6  # rounding to 1/255 steps, plus float32 arithmetic
    for augment in (None, geometric):  # resampling mixes pixels: the error stays in the bound
        stored = PairDataset(pairs, cache=small, as_stored=True, batch_augment=augment)
        plain = PairDataset(pairs, cache=exact, as_stored=True, batch_augment=augment)
        batch = collate_pairs([stored[0], stored[1]])
        assert batch["image"].dtype == torch.uint8  # a quarter of the bytes through the loader
        on_device = stored.on_device(batch)["image"]
        reference = plain.on_device(collate_pairs([plain[0], plain[1]]))["image"]
        assert on_device.dtype == torch.float32
        torch.testing.assert_close(on_device, reference, atol=half_step, rtol=0)
        if augment is not None:
            assert (on_device - batch["image"] / 255).abs().max() > 0.1  # it did augment

    build_cache(images, tmp_path, pipeline, dtype="uint8")
    small.refresh()
    augment = BatchAugment(prob=1.0)
    stored = PairDataset(pairs, cache=small, as_stored=True, batch_augment=augment)
    read = PairDataset(pairs, cache=small)  # float32 reads of the same uint8 entries
    expected = augment(collate_pairs([read[0], read[1]])["image"], ["img0", "img1"])
    on_device = stored.on_device(collate_pairs([stored[0], stored[1]]))["image"]
    torch.testing.assert_close(on_device, expected, atol=1e-6, rtol=0)  # same ids, same draws


def test_collate_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="empty"):
        collate_pairs([])


def test_seg_dataset_items_and_output_spacing(write_xray, tmp_path):
    image = write_xray("ct.dcm", shape=(40, 80), spacing=(0.5, 0.5))
    raster_image = tmp_path / "img.png"
    Image.fromarray(np.full((40, 80), 128, np.uint8)).save(raster_image)
    mask = np.zeros((40, 80), np.uint8)
    mask[8:32, 40:80] = 1
    np.save(tmp_path / "m.npy", mask)
    Image.fromarray(mask * 255).save(tmp_path / "m.png")
    samples = [
        SegSample(str(image), str(tmp_path / "m.npy"), "lung", image_id="a"),
        SegSample(str(raster_image), str(tmp_path / "m.png"), "lung", pixel_spacing=(0.1, 0.1)),
        SegSample(str(raster_image), str(tmp_path / "m.png"), "lung"),
    ]
    dataset = SegDataset(samples, 32)
    first = dataset[0]
    assert first["image"].shape == first["mask"].shape == (1, 32, 32)
    assert type(first["image"]) is torch.Tensor
    assert set(first["mask"].unique().tolist()) == {0.0, 1.0}
    # rows 8-31 of 40 -> 3-12 of 16, plus 8 rows of padding; columns 40-79 of 80 -> 16-31
    assert first["mask"][0, 11:21, 16:].all() and first["mask"].sum() == 10 * 16
    assert torch.allclose(first["spacing"], torch.tensor([1.25, 1.25]))  # 0.5 mm x 80/32
    assert torch.allclose(dataset[1]["spacing"], torch.tensor([0.25, 0.25]))
    assert torch.isnan(dataset[2]["spacing"]).all()
    assert torch.equal(dataset[1]["mask"], first["mask"])
    assert (first["image_id"], first["structure"]) == ("a", "lung")
