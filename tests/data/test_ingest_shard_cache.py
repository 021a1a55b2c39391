"""``build_cache`` sharded by rank under torchrun (2 CPU processes): each missing image is
decoded by one rank, and every rank then sees the cache, counts and failures one process has."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medvl.data.cache import TensorCache, build_cache
from medvl.data.ingest import ingest_directory
from medvl.data.transforms import PipelineConfig

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
WORKER = """
import json, logging, sys
from medvl.data.cache import build_cache
from medvl.data.processes import process_state
from medvl.data.records import ImageRecord
from medvl.data.transforms import PipelineConfig

logging.basicConfig(level=logging.INFO)

records = [ImageRecord(**r) for r in json.loads(open(sys.argv[1]).read())]
built = build_cache(records, sys.argv[2], PipelineConfig(size=32), shard_size=2)
state = process_state()
row = {"added": built.added, "reused": built.reused, "entries": len(built.cache),
       "failures": [f.path for f in built.failures]}
open(f"{sys.argv[3]}.{state.process_index}.json", "w").write(json.dumps(row))
"""


def test_two_ranks_build_the_one_process_cache(corpus, tmp_path):
    records = list(ingest_directory(corpus.root, tmp_path / "ingest", workers=1).iter_records())
    gone = dataclasses.replace(records[0], path=str(tmp_path / "moved_away"), content_hash="")
    records = [*records, gone]  # one unreadable record: a failure on whichever rank reads it
    (tmp_path / "records.json").write_text(json.dumps([dataclasses.asdict(r) for r in records]))
    (tmp_path / "worker.py").write_text(WORKER)
    one = build_cache(records, tmp_path / "one", PipelineConfig(size=32), shard_size=2)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", f"--master_port={port}",
           "--master_addr=127.0.0.1", str(tmp_path / "worker.py"), str(tmp_path / "records.json"),
           str(tmp_path / "two"), str(tmp_path / "rank")]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    n = len(records)  # each rank decodes its half of the images the cache misses
    assert f"rank 0/2 decodes {(n + 1) // 2} of {n} images" in done.stderr
    assert f"rank 1/2 decodes {n // 2} of {n} images" in done.stderr

    expected = {"added": one.added, "reused": one.reused, "entries": len(one.cache),
                "failures": [f.path for f in one.failures]}  # fmt: skip
    assert expected["added"] == len(corpus.good) and expected["failures"] == [gone.path]
    for rank in (0, 1):  # every rank holds the merged result
        assert json.loads((tmp_path / f"rank.{rank}.json").read_text()) == expected
    two = TensorCache.for_pipeline(tmp_path / "two", PipelineConfig(size=32), shard_size=2)
    keys = sorted(one.cache.keys())
    assert sorted(two.keys()) == keys
    for key in keys:
        np.testing.assert_array_equal(two.get(key), one.cache.get(key))
