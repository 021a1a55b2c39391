"""Embedding cache: hits never run the encoder, a changed encoder misses, bad files are skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medvl.models.sam import SamConfig, build_sam
from medvl.models.sam.cache import (
    ArrayImageSource,
    EmbeddingCache,
    FileHashMemo,
    FileImageSource,
    encode_images,
    open_cache,
)
from medvl.models.sam.geometry import resize_longest


def _images(n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((40 + 4 * i, 64), dtype=np.float32) for i in range(n)]


def _counting(model) -> list[int]:
    calls: list[int] = []
    model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls


def read_png(path: str) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float32) / 255.0


def test_cache_hit_never_calls_the_encoder(tmp_path) -> None:
    model = build_sam(SamConfig(variant="tiny", img_size=64))
    calls = _counting(model)
    images = _images()
    source = ArrayImageSource(images + [images[1]])  # a duplicate is encoded once
    cache = open_cache(model, source, tmp_path, shard_size=2)
    first = encode_images(model, source, cache, batch_size=2)
    assert sum(calls) == 5 and first.computed == 5 and not first.failures
    assert first.refs[5] == first.refs[1]
    assert first.refs[0].original_size == (40, 64)
    calls.clear()
    again = encode_images(model, source, open_cache(model, source, tmp_path), batch_size=2)
    assert calls == [] and again.computed == 0 and again.refs == first.refs
    assert len(list(cache.dir.glob("shard-*.npy"))) == 3  # 2 + 2 + 1 entries
    gray, geo = resize_longest(images[3], 64)
    with torch.no_grad():
        direct = model.encode(model.normalize(gray[None], torch.tensor([geo.input_size])))[0]
    cached = torch.from_numpy(np.array(cache.read(first.refs[3]))).float()
    torch.testing.assert_close(cached, direct, atol=2e-3, rtol=2e-3)  # stored as fp16


def test_changed_encoder_invalidates(tmp_path) -> None:
    model = build_sam(SamConfig(variant="tiny", img_size=64))
    source = ArrayImageSource(_images(3))
    cache = open_cache(model, source, tmp_path)
    encode_images(model, source, cache)
    with torch.no_grad():
        model.image_encoder.neck[0].weight.mul_(1.01)
    calls = _counting(model)
    changed = open_cache(model, source, tmp_path)
    assert changed.dir != cache.dir and len(changed) == 0
    assert encode_images(model, source, changed).computed == 3 and sum(calls) == 3
    assert changed.stale_namespaces() == [cache.dir]
    other_size = build_sam(SamConfig(variant="tiny", img_size=128))
    assert open_cache(other_size, source, tmp_path).dir not in (cache.dir, changed.dir)


def test_file_source_keys_on_bytes_and_skips_unreadable_files(tmp_path) -> None:
    paths = []
    for i, image in enumerate(_images(3)):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray((image * 255).astype(np.uint8)).save(paths[-1])
    copy = tmp_path / "copy.png"
    copy.write_bytes(paths[0].read_bytes())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    memo = FileHashMemo(tmp_path / "cache" / "hashes.jsonl")
    source = FileImageSource([*paths, copy, broken], read_png, "png-reader", memo)
    model = build_sam(SamConfig(variant="tiny", img_size=64))
    cache = open_cache(model, source, tmp_path / "cache")
    result = encode_images(model, source, cache)
    assert result.computed == 4  # three images + the broken file tried once
    assert result.refs[3] == result.refs[0] and result.refs[4] is None
    assert set(result.failures) == {4} and "cannot identify" in result.failures[4]
    memo.save()
    reopened = FileHashMemo(tmp_path / "cache" / "hashes.jsonl")
    assert reopened.sha256(paths[1]) == source.content_key(1)


def test_cache_rejects_a_different_item_shape(tmp_path) -> None:
    EmbeddingCache(tmp_path, {"a": 1}, (2, 3))
    with pytest.raises(ValueError, match="shape"):
        EmbeddingCache(tmp_path, {"a": 1}, (2, 4))
    cache = EmbeddingCache(tmp_path, {"b": 1}, (2, 3))
    with pytest.raises(ValueError, match="entry shape"):
        cache.add("k", np.zeros((3, 3)), (1, 1))


def test_pixels_cache_for_trainable_encoders(tmp_path) -> None:
    model = build_sam(SamConfig(variant="tiny", img_size=64, train_mode="full"))
    calls = _counting(model)
    images = _images(2)
    source = ArrayImageSource(images)
    cache = open_cache(model, source, tmp_path, kind="pixels")
    refs = encode_images(model, source, cache).refs
    assert calls == []
    expected, _ = resize_longest(images[1], 64)
    np.testing.assert_allclose(cache.read(refs[1]), expected.numpy(), atol=1e-3)
