"""The one phantom config: which fields change the bytes (and so the hash), and validation."""

from __future__ import annotations

import dataclasses

import pytest

from medvl.data.phantom import PhantomConfig, phantom_hash


def test_hash_follows_the_fields_that_change_the_bytes_only() -> None:
    base = PhantomConfig(n_studies=10, size=64)
    assert phantom_hash(dataclasses.replace(base, workers=8)) == phantom_hash(base)
    changed = [
        dataclasses.replace(base, n_studies=11),
        dataclasses.replace(base, seed=1),
        dataclasses.replace(base, size=128),
        dataclasses.replace(base, reports="/data/NLMCXR_reports.tgz"),
        dataclasses.replace(base, label_source="labeler"),
    ]
    hashes = {phantom_hash(c) for c in changed}
    assert len(hashes) == len(changed) and phantom_hash(base) not in hashes


@pytest.mark.parametrize(("key", "value"), [("n_studies", 0), ("size", 32)])
def test_config_rejects_impossible_phantoms(key: str, value: int) -> None:
    with pytest.raises(ValueError, match=key):
        PhantomConfig(**{key: value})


def test_generator_version_is_hashed_so_older_folders_regenerate(monkeypatch) -> None:
    from medvl.data.phantom import config

    base = PhantomConfig(n_studies=10, size=64)
    before = phantom_hash(base)
    monkeypatch.setattr(config, "GENERATOR_VERSION", config.GENERATOR_VERSION - 1)
    assert phantom_hash(base) != before
