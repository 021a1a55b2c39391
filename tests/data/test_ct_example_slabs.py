"""The slab split: contiguous blocks, a gap between any two splits, every slice in one split."""

from __future__ import annotations

import pytest

from medvl.data.seg_samples import slab_split


@pytest.mark.parametrize(("n", "block", "gap"), [(133, 4, 1), (50, 3, 2), (7, 10, 1)])
def test_slabs_have_gaps_and_no_shared_slice(n: int, block: int, gap: int) -> None:
    splits = slab_split(n, block, gap)
    assert len(splits) == n
    labelled = [z for z, s in enumerate(splits) if s]
    assert labelled[0] == 0
    for z in range(n - 1):  # neighbouring slices never belong to two different splits
        assert not (splits[z] and splits[z + 1] and splits[z] != splits[z + 1]), z
    if n > block:
        assert splits[block : block + gap] == [""] * gap
    runs = [s for z, s in enumerate(splits) if s and (z == 0 or splits[z - 1] != s)]
    assert runs[: min(len(runs), 4)] == ["train", "val", "train", "test"][: len(runs)]


def test_slab_split_counts_on_the_ct_example() -> None:
    splits = slab_split(133, 4, 1)
    assert [splits.count(k) for k in ("train", "val", "test", "")] == [55, 28, 24, 26]


def test_bad_slab_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="block >= 1"):
        slab_split(10, 0, 1)
