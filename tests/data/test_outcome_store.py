"""The ingest's on-disk outcome store: path order, real paths met, shards, cleanup."""

from __future__ import annotations

import os

import pytest

from medvl.data.outcome_store import OutcomeStore
from medvl.data.processes import shard


def test_path_order_is_python_string_order_for_any_name(tmp_path):
    names = ["b", "a/z", "a.dcm", "caf\u00e9", "cafe", os.fsdecode(b"caf\xe9"), "\U0001f600"]
    with OutcomeStore(tmp_path) as store:
        store.add((f"/r/{n}", ("failure", "unreadable")) for n in names)
        assert [path for path, *_ in store.in_path_order()] == sorted(f"/r/{n}" for n in names)


def test_a_real_path_is_claimed_once_and_a_noted_one_can_still_be_claimed(tmp_path):
    with OutcomeStore(tmp_path) as store:
        assert store.claim("/x") and not store.claim("/x")
        assert not store.met("/y")
        store.note("/y")
        assert store.met("/y") and store.claim("/y") and not store.claim("/y")
        store.note("/x")
        assert not store.claim("/x")


def test_chunks_hold_each_ranks_share_of_one_pass(tmp_path):
    with OutcomeStore(tmp_path) as store:
        for i in range(11):
            store.queue(f"/walk/{i:02d}")
        for i in range(3):
            store.queue(f"/later/{i}")
        walk = [f"/walk/{i:02d}" for i in range(11)]

        class Rank:
            def __init__(self, index: int) -> None:
                self.process_index, self.num_processes = index, 3

        for rank in range(3):
            chunks = list(store.chunks(0, 11, 2, rank, 3))
            assert all(len(c) <= 2 for c in chunks)
            assert [p for c in chunks for p in c] == shard(walk, Rank(rank))
        assert list(store.chunks(11, store.queued, 5)) == [[f"/later/{i}" for i in range(3)]]


def test_dicomdir_references_are_handed_out_once(tmp_path):
    with OutcomeStore(tmp_path) as store:
        store.add([("/r/DICOMDIR", ("dicomdir", ["/r/IM1", "/r/IM2"]))])
        assert list(store.references()) == ["/r/IM1", "/r/IM2"]
        assert list(store.references()) == []
        assert store.outcomes == 1


def test_the_store_folder_is_removed_also_on_error(tmp_path):
    with pytest.raises(RuntimeError), OutcomeStore(tmp_path) as store:
        store.queue("/r/a")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
