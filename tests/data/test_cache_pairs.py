"""``data.cache_dtype``: the pair jobs' tensor cache in the configured dtype, its own folder."""

from __future__ import annotations

import pytest
import torch

from medvl.config import ConfigError, from_dict
from medvl.data.datasets import collate_pairs
from medvl.data.pairs import PairDataConfig, load_pairs, pair_dataset
from medvl.data.phantom import PhantomConfig


def test_cache_dtype_reaches_the_cache_and_keeps_float32_apart(tmp_path) -> None:
    manifest = tmp_path / "phantoms" / "studies.jsonl"
    phantom = PhantomConfig(n_studies=2, size=64, workers=1)
    config = from_dict(PairDataConfig, {"manifest": str(manifest), "cache_dtype": "uint8"})
    config.phantom = phantom
    pairs = load_pairs(config, None)[:2]

    train = pair_dataset(pairs, config, image_size=32, train=True)
    assert train.cache.dtype == "uint8" and train.cache.dir.name.endswith("-uint8")
    batch = collate_pairs([train[0], train[1]])
    assert batch["image"].dtype == torch.uint8
    exact = pair_dataset(pairs, PairDataConfig(manifest=manifest, phantom=phantom), 32)
    assert exact.cache.dtype == "float32" and exact.cache.dir != train.cache.dir
    reference = collate_pairs([exact[0], exact[1]])["image"]
    torch.testing.assert_close(
        train.on_device(batch)["image"], reference, atol=1 / 510 + 1e-6, rtol=0
    )


def test_cache_dtype_is_checked_when_the_config_loads() -> None:
    assert PairDataConfig().cache_dtype == "float32"  # exact unless a job asks
    with pytest.raises(ConfigError, match="cache_dtype: 'int8' is not one of"):
        from_dict(PairDataConfig, {"cache_dtype": "int8"})
