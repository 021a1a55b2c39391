"""The engine across processes: two CPU ranks (gloo) match one, and a SIGKILLed run resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("engine_worker.py")
pytestmark = pytest.mark.slow


def env() -> dict[str, str]:
    out = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    out.pop("WORLD_SIZE", None)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_worker(out: Path, *args: str, nproc: int = 1) -> dict:
    if nproc == 1:
        cmd = [sys.executable, str(WORKER)]
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [
            str(torchrun),
            f"--nproc_per_node={nproc}",
            f"--master_port={free_port()}",
            "--master_addr=127.0.0.1",
            str(WORKER),
        ]
    done = subprocess.run(
        [*cmd, "--out", str(out), *args], env=env(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_cpu_processes_match_one_with_the_same_global_batch(tmp_path):
    one = run_worker(tmp_path / "one", "--batch", "8", "--steps", "10")
    two = run_worker(tmp_path / "two", "--batch", "4", "--steps", "10", nproc=2)
    assert (one["world"], two["world"]) == (1, 2)
    for (step_a, loss_a), (step_b, loss_b) in zip(one["losses"], two["losses"], strict=True):
        assert step_a == step_b
        assert loss_b == pytest.approx(loss_a, abs=1e-5, rel=1e-5), f"step {step_a}"


def test_a_killed_run_resumes_on_the_same_trajectory(tmp_path):
    args = ["--steps", "24", "--checkpoint-every", "5", "--dropout", "0.1", "--samples", "40"]
    reference = run_worker(tmp_path / "reference", *args)

    out = tmp_path / "killed"
    cmd = [sys.executable, str(WORKER), "--out", str(out), *args, "--sleep", "0.05"]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = out / "checkpoints" / "step-00000010" / "state.json"
    deadline = time.monotonic() + 180
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert target.exists(), "the worker never reached step 10"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "result.json").exists()  # it really died before finishing

    resumed = run_worker(out, *args)
    assert resumed["resumed_from"] >= 10
    assert resumed["final_loss"] == pytest.approx(reference["final_loss"], abs=1e-5, rel=0)
    ref = dict((s, v) for s, v in reference["losses"])
    for step, loss in resumed["losses"]:
        assert loss == pytest.approx(ref[step], abs=1e-6, rel=0), f"step {step}"
