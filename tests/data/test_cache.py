"""Tensor cache: shards not files, exact or bounded reads, hits without decoding, changes miss."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import medvl.data.loading as loading_module
from medvl.data.cache import DTYPES, TensorCache, build_cache
from medvl.data.datasets import PairDataset
from medvl.data.ingest import file_sha256
from medvl.data.records import ImageRecord, ImageReportPair
from medvl.data.transforms import PipelineConfig, eval_transforms
from medvl.io.dicom import read_dicom


@pytest.fixture
def records(write_xray) -> list[ImageRecord]:
    paths = [write_xray(f"img{i}.dcm", seed=i, shape=(40 + 4 * i, 36)) for i in range(5)]
    return [
        ImageRecord(path=str(p), image_id=f"id{i}", content_hash=file_sha256(p))
        for i, p in enumerate(paths)
    ]


@pytest.fixture
def count_reads(monkeypatch) -> list[str]:
    """Count read_dicom calls made by the transforms (the decode path)."""
    calls: list[str] = []

    def counting(path, **kwargs):
        calls.append(str(path))
        return read_dicom(path, **kwargs)

    monkeypatch.setattr(loading_module, "read_dicom", counting)
    return calls


def test_put_get_round_trip_is_exact_and_sharded(tmp_path):
    cache = TensorCache(tmp_path, "k1", shard_size=2)
    arrays = {
        f"h{i}": np.random.default_rng(i).random((1, 8, 8), dtype=np.float32) for i in range(5)
    }
    assert cache.put_many(arrays.items()) == 5
    assert cache.put_many(arrays.items()) == 0  # already present
    shards = sorted(p.name for p in (tmp_path / "k1").glob("shard-*.npy"))
    assert len(shards) == 3  # 2 + 2 + 1, never one file per image

    reopened = TensorCache(tmp_path, "k1")
    assert len(reopened) == 5 and "h3" in reopened and "nope" not in reopened
    first, second = reopened.get("h3"), reopened.get("h3")
    assert first.tobytes() == second.tobytes() == arrays["h3"].tobytes()
    first[...] = 0  # a copy: the cache is unchanged
    assert reopened.get("h3").tobytes() == arrays["h3"].tobytes()
    assert reopened.get("missing") is None
    assert isinstance(reopened._shard(0), np.memmap)


def test_shape_mismatch_and_bad_arguments_are_refused(tmp_path):
    cache = TensorCache(tmp_path, "k")
    cache.put_many([("a", np.zeros((1, 4, 4), np.float32))])
    with pytest.raises(ValueError, match="shape"):
        cache.put_many([("b", np.zeros((1, 5, 4), np.float32))])
    with pytest.raises(ValueError, match="folder name"):
        TensorCache(tmp_path, "../escape")
    with pytest.raises(ValueError, match="dtype"):
        TensorCache(tmp_path, "k2", dtype="int8")


def test_float16_storage_halves_size_within_tolerance(tmp_path):
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    cache = TensorCache(tmp_path, "half", dtype="float16")
    cache.put_many([("x", values)])
    out = TensorCache(tmp_path, "half").get("x")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, values, atol=5e-4)


def test_uint8_storage_quarters_size_and_reads_within_half_a_step(tmp_path):
    rng = np.random.default_rng(0)
    edges = np.array([0.0, 1.0, 0.5, 1 / 510, 1 - 1 / 510, 127.5 / 255], np.float32)
    values = np.concatenate([edges, rng.random(4090, dtype=np.float32)]).reshape(1, 64, 64)
    cache = TensorCache(tmp_path, "u8", dtype="uint8")
    cache.put_many([("x", values)])
    reopened = TensorCache(tmp_path, "u8")
    assert reopened.dtype == "uint8"
    stored = reopened.get("x", as_stored=True)
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, np.rint(values.astype(np.float64) * 255))
    out = reopened.get("x")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, stored.astype(np.float32) / np.float32(255))
    error = np.abs(out.astype(np.float64) - values)
    assert error.max() <= 1 / 510 + 2**-24  # half a step, plus the float32 rounding of x / 255
    assert error.max() > 1 / 510 - 1e-4  # and the bound is tight: this is quantisation
    assert out[0, 0, :2].tolist() == [0.0, 1.0]  # black and white are exact
    shard = next((tmp_path / "u8").glob("shard-*.npy"))
    assert shard.stat().st_size < values.nbytes / 4 + 256  # a quarter of float32, plus header


@pytest.mark.parametrize("bad", [1.01, -0.01, np.nan])
def test_uint8_refuses_values_outside_0_1_instead_of_clipping(tmp_path, bad):
    cache = TensorCache(tmp_path, "u8", dtype="uint8")
    values = np.full((1, 4, 4), 0.5, np.float32)
    values[0, 1, 2] = bad
    with pytest.raises(ValueError, match=r"uint8 storage holds \[0, 1\] only") as err:
        cache.put_many([("ab" * 32, values)])
    assert "array for abababab" in str(err.value) and "\n" not in str(err.value)
    assert len(cache) == 0 and not list(tmp_path.glob("u8/shard-*"))
    within_half_a_step = np.full((1, 4, 4), 1 + 1 / 600, np.float32)
    assert cache.put_many([("ok", within_half_a_step)]) == 1
    assert cache.get("ok", as_stored=True).max() == 255


def test_a_folder_keeps_its_dtype_and_pipelines_get_one_folder_per_dtype(tmp_path):
    TensorCache(tmp_path, "k").put_many([("a", np.ones((1, 2, 2), np.float32))])
    for other in ("float16", "uint8"):
        with pytest.raises(ValueError, match=f"stores float32, not {other}"):
            TensorCache(tmp_path, "k", dtype=other)
    assert TensorCache(tmp_path, "k").dtype == "float32"  # no dtype: the folder's

    racing = TensorCache(tmp_path, "k2", dtype="uint8")  # another process creates it meanwhile
    TensorCache(tmp_path, "k2", dtype="float16").put_many([("a", np.ones((1, 2, 2), np.float32))])
    with pytest.raises(ValueError, match="stores float16, not uint8"):
        racing.put_many([("b", np.ones((1, 2, 2), np.float32))])

    pipeline = PipelineConfig(size=8)
    folders = {d: TensorCache.for_pipeline(tmp_path, pipeline, dtype=d).dir.name for d in DTYPES}
    assert folders == {
        "float32": pipeline.key(),
        "float16": f"{pipeline.key()}-float16",
        "uint8": f"{pipeline.key()}-uint8",
    }


def test_build_cache_in_two_dtypes_keeps_both(tmp_path, records):
    pipeline = PipelineConfig(size=24)
    exact = build_cache(records, tmp_path, pipeline).cache
    small = build_cache(records, tmp_path, pipeline, dtype="uint8")
    assert (small.added, small.cache.dtype) == (5, "uint8")
    again = build_cache(records, tmp_path, pipeline)
    assert (again.added, again.reused, again.cache.dtype) == (0, 5, "float32")
    meta = json.loads((small.cache.dir / "meta.json").read_text())
    assert meta["dtype"] == "uint8" and meta["pipeline"]["size"] == 24
    for record in records:
        np.testing.assert_allclose(
            small.cache.get(record.content_hash), exact.get(record.content_hash),
            atol=1 / 510 + 2**-24, rtol=0,
        )  # fmt: skip


def test_pickled_cache_reopens_its_maps(tmp_path):
    cache = TensorCache(tmp_path, "k")
    cache.put_many([("a", np.ones((1, 2, 2), np.float32))])
    cache.get("a")
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._maps == {}
    np.testing.assert_array_equal(clone.get("a"), np.ones((1, 2, 2)))


def test_build_cache_stores_the_eval_chain_output(tmp_path, records):
    pipeline = PipelineConfig(size=24)
    result = build_cache(records, tmp_path / "c", pipeline, shard_size=2)
    assert (result.added, result.reused, result.failures) == (5, 0, [])
    chain = eval_transforms(pipeline)
    for record in records:
        expected = chain({"image": record.path})["image"].numpy()
        assert result.cache.get(record.content_hash).tobytes() == expected.tobytes()
    meta = json.loads((tmp_path / "c" / pipeline.key() / "meta.json").read_text())
    assert meta["pipeline"]["size"] == 24 and meta["shape"] == [1, 24, 24]

    again = build_cache(records, tmp_path / "c", pipeline)
    assert (again.added, again.reused) == (0, 5)


def test_build_cache_records_bad_files_and_hashes_unhashed_records(tmp_path, records):
    bad = tmp_path / "bad.dcm"
    bad.write_text("not an image")
    unhashed = ImageRecord(path=records[0].path, image_id="same-file-no-hash")
    todo = [*records[1:], unhashed, ImageRecord(path=str(bad), image_id="bad")]
    result = build_cache(todo, tmp_path / "c", PipelineConfig(size=16), workers=2)
    assert result.added == 5
    assert [(f.path, "not a DICOM file" in f.reason) for f in result.failures] == [(str(bad), True)]
    assert records[0].content_hash in result.cache


def test_cache_hit_does_not_decode_and_equals_uncached(tmp_path, records, count_reads):
    pipeline = PipelineConfig(size=24)
    build_cache(records, tmp_path / "c", pipeline)
    pairs = [ImageReportPair(image=r, study_id="s", patient_key="p", text="t") for r in records]
    count_reads.clear()

    cached = PairDataset(pairs, cache=TensorCache.for_pipeline(tmp_path / "c", pipeline))
    cached_epoch = [cached[i]["image"] for i in range(len(cached))]
    assert count_reads == []

    uncached = PairDataset(pairs, eval_transforms(pipeline))
    uncached_epoch = [uncached[i]["image"] for i in range(len(uncached))]
    assert len(count_reads) == len(records)
    for a, b in zip(cached_epoch, uncached_epoch, strict=True):
        assert torch.equal(a, b)


def test_changed_pipeline_misses_and_decodes(tmp_path, records, count_reads):
    build_cache(records, tmp_path / "c", PipelineConfig(size=24))
    count_reads.clear()
    windowed = PipelineConfig(size=24, window=(1000.0, 500.0))
    other = TensorCache.for_pipeline(tmp_path / "c", windowed)
    assert len(other) == 0 and other.get(records[0].content_hash) is None
    pairs = [ImageReportPair(image=records[0], study_id="s", patient_key="p", text="t")]
    item = PairDataset(pairs, cache=other)[0]
    assert count_reads == [records[0].path]
    assert item["image"].shape == (1, 24, 24)


def test_two_writers_share_one_cache_without_a_global_index(tmp_path):
    one, two = TensorCache(tmp_path, "k", shard_size=2), TensorCache(tmp_path, "k", shard_size=2)
    one.put_many([(f"a{i}", np.full((1, 2, 2), i, np.float32)) for i in range(3)])
    assert "a0" not in two  # opened before: not seen until it refreshes (or writes)
    assert two.put_many([(f"b{i}", np.full((1, 2, 2), 10 + i, np.float32)) for i in range(2)]) == 2
    assert len(two) == 5 and two.get("a2")[0, 0, 0] == 2
    assert len(one) == 3
    one.refresh()
    assert len(one) == 5
    (tmp_path / "k" / ".shard-orphan.npy.tmp").write_bytes(b"crashed mid-write")
    reader = TensorCache(tmp_path, "k")
    assert len(reader) == 5 and reader.get("b1")[0, 0, 0] == 11
    assert not list((tmp_path / "k").glob("index*"))
