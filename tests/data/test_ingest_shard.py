"""``medvl ingest`` sharded by rank: the README's torchrun line with 2 CPU processes writes the
manifests one process writes (byte for byte), each file read by exactly one rank."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medvl.data.ingest import ingest_directory
from medvl.data.processes import shard, unshard

BIN = Path(sys.executable).parent


def readme_ingest_line(readme_code) -> str:
    block = readme_code("### Several processes", "bash")
    (line,) = [x for x in block.splitlines() if x.startswith("torchrun") and " ingest " in x]
    return line


def test_shards_are_disjoint_cover_everything_and_unshard_restores_the_order():
    items = list(range(11))

    class Rank:
        def __init__(self, index: int) -> None:
            self.process_index, self.num_processes = index, 3

    shares = [shard(items, Rank(i)) for i in range(3)]
    assert sorted(x for s in shares for x in s) == items
    assert [len(s) for s in shares] == [4, 4, 3]
    assert unshard(shares) == items


@pytest.mark.slow
def test_two_ranks_write_the_one_process_manifest(corpus, tmp_path, readme_code):
    # a byte copy repeats a SOPInstanceUID: the rule (first path kept) must hold across ranks
    shutil.copy(corpus.good[0], corpus.root / "zz_copy")
    work = tmp_path / "work"
    work.mkdir()
    (work / "archive").symlink_to(corpus.root)
    one = ingest_directory(corpus.root, work / "runs" / "one", workers=1)

    line = readme_ingest_line(readme_code)
    argv = shlex.split(re.sub(r"--nproc_per_node \d+", "--nproc_per_node 2", line))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv[1:1] = [f"--master_port={port}", "--master_addr=127.0.0.1"]
    argv[0], argv[argv.index("medvl")] = str(BIN / "torchrun"), str(BIN / "medvl")
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", MEDVL_SALT="")
    done = subprocess.run(
        [*argv, "workers=1"], cwd=work, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert done.stdout.count("manifest: ") == 1  # the main rank reports the merged result once
    files = len(corpus.good) + len(corpus.bad) + 1
    shares = sorted(re.findall(rf"rank (\d)/2 reads (\d+) of {files} files", done.stderr))
    assert shares == [("0", str((files + 1) // 2)), ("1", str(files // 2))]

    two = work / "runs" / "ingest"
    assert sorted(p.name for p in two.iterdir()) == [
        "config.yaml",
        "failures.jsonl",
        "images.jsonl",
    ]
    for name in ("images.jsonl", "failures.jsonl"):
        assert (two / name).read_text() == (one.manifest.parent / name).read_text(), name
    assert one.duplicate_uids == 1 and one.images == len(corpus.good)
