"""``medvl infer --studies`` sharded by rank: the README's torchrun line with 2 CPU processes
analyses each study on exactly one rank and writes the one-process results and summary."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from infer_dicom import make_cr
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medvl.cli import app
from medvl.models.aligner import create_aligner

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def readme_infer_line(readme_code) -> str:
    block = readme_code("### Several processes", "bash")
    (line,) = [x for x in block.splitlines() if x.startswith("torchrun") and " infer " in x]
    return line


def comparable(value):
    """A result document without wall-clock fields, probabilities to 4 decimals (the two runs
    use different CPU thread counts, which moves the 6th decimal)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def test_two_ranks_write_the_one_process_results(tmp_path, readme_code):
    work = tmp_path / "work"
    incoming = work / "incoming"
    for i in range(3):  # three studies, the first split over two folders
        uid = generate_uid()
        for part in "ab":
            (incoming / f"s{i}{part}").mkdir(parents=True)
        make_cr(incoming / f"s{i}a" / "pa.dcm", study_uid=uid, view="PA", seed=i)
        if i == 0:
            make_cr(incoming / f"s{i}b" / "ap.dcm", study_uid=uid, view="AP", seed=9)
    # s1b and s2b stay empty: folder problems the summary lists by index
    create_aligner("tiny").save_pretrained(work / "runs" / "merged")
    line = readme_infer_line(readme_code)
    args = shlex.split(line.split(" medvl ", 1)[1])

    single = tmp_path / "single"  # the same inputs under the same relative names
    single.mkdir()
    for name in ("incoming", "runs"):
        (single / name).symlink_to(work / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(single)
        done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output

    argv = shlex.split(re.sub(r"--nproc_per_node \d+", "--nproc_per_node 2", line))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv[1:1] = [f"--master_port={port}", "--master_addr=127.0.0.1"]
    argv[0], argv[argv.index("medvl")] = str(BIN / "torchrun"), str(BIN / "medvl")
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    two = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, (two.stdout + two.stderr)[-4000:]

    keys = re.findall(r"^study (\w+) \(folders", two.stdout, re.M)
    assert len(keys) == 3 and len(set(keys)) == 3  # every study analysed once, by one rank
    one_dir, two_dir = single / args[-1], work / args[-1]
    listing = [sorted(str(p.relative_to(d)) for p in d.rglob("*")) for d in (one_dir, two_dir)]
    assert listing[0] == listing[1]
    for name in ["summary.json", *(f"{k}/result.json" for k in keys)]:
        a, b = (json.loads((d / name).read_text()) for d in (one_dir, two_dir))
        assert comparable(a) == comparable(b), name
