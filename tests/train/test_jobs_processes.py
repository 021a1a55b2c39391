"""Every training and evaluation job as one process group: 2 CPU ranks (gloo) against 1.

Each test runs the README's multi-process command for the job as written (launcher, flags,
config), with only the process count set to the 2 this machine has and the job shrunk by
appended overrides, in a folder whose ``runs/`` and ``configs/`` are the test's own; then the
same job as one plain process. Both must report the same number of processes they were started
with, write the same files (once: no leftover temporaries), and agree on their metrics.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
_spec = importlib.util.spec_from_file_location("readme_helpers", ROOT / "tests" / "conftest.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
readme_block = _helpers.readme_code_block  # what the readme_code fixture returns, module-wide
SMALL_TRAIN = ["train.progress=false", "train.tensorboard=false", "train.cpu=true"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multi_process_commands(readme_code) -> dict[tuple[str, str], str]:
    """The README's torchrun / accelerate launch lines, by (launcher, medvl command)."""
    lines = readme_code("### Scripted training", "bash").splitlines()
    lines += readme_code("### Several processes", "bash").splitlines()
    found: dict[tuple[str, str], str] = {}
    for line in lines:
        line = line.split("  #", 1)[0].strip()
        if line.startswith(("torchrun", "accelerate launch")):
            job = line.split(" medvl ", 1)[1].split()[0]
            assert (line.split()[0], job) not in found, line
            found[line.split()[0], job] = line
    return found


def test_every_readme_launcher_line_is_run_here(readme_code):
    assert set(multi_process_commands(readme_code)) == {
        ("torchrun", "pretrain"),
        ("accelerate", "pretrain"),
        ("torchrun", "finetune"),
        ("torchrun", "segment-finetune"),
        ("accelerate", "zeroshot"),
        ("torchrun", "ingest"),  # run by tests/data/test_ingest_shard.py
        ("torchrun", "infer"),  # run by tests/infer/test_batch_shard.py
    }


def job_args(line: str) -> list[str]:
    """The ``medvl`` arguments of a README launcher line (to run the same job in 1 process)."""
    return shlex.split(line.split(" medvl ", 1)[1])


def launch(line: str, cwd: Path, extra: list[str]) -> str:
    """Run a README launcher ``line`` with 2 processes in ``cwd``; return its output."""
    argv = shlex.split(re.sub(r"(--nproc_per_node|--num_processes) \d+", r"\1 2", line))
    assert argv[:1] in (["torchrun"], ["accelerate"]), line
    port = free_port()
    if argv[0] == "torchrun":
        argv[1:1] = [f"--master_port={port}", "--master_addr=127.0.0.1"]
    else:
        argv[2:2] = ["--main_process_port", str(port)]
    argv[0] = str(BIN / argv[0])
    argv[argv.index("medvl")] = str(BIN / "medvl")
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [*argv, *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def single(args: list[str], cwd: Path) -> None:
    """The same job in this one process (``cwd`` as the working folder)."""
    from typer.testing import CliRunner

    from medvl.cli import app

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            patch.delenv(key, raising=False)
        done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, (done.output[-4000:], done.exception)


def files(folder: Path) -> set[str]:
    """Relative paths under ``folder`` except the per-rank RNG states (one per process)."""
    out = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert not [p for p in out if ".tmp" in p], out  # no half-written checkpoint left behind
    return {p for p in out if not re.search(r"rng-[1-9]\d*\.pt$", p)}


def two_ranks_and_one(line: str, workdir: Path, common: list[str], name: str) -> tuple[dict, dict]:
    """``line`` with 2 processes of batch 4 and in 1 process of batch 8 (same global batch).

    Asserts the launch formed one 2-process group and both runs wrote the same files; returns
    the ``metrics.json`` of the 1-process and the 2-process run.
    """
    output = launch(line, workdir, [*common, "train.batch_size=4", f"output_dir=runs/{name}_two"])
    single([*job_args(line), *common, "train.batch_size=8", f"output_dir=runs/{name}_one"], workdir)
    one, two = workdir / "runs" / f"{name}_one", workdir / "runs" / f"{name}_two"
    assert processes_logged(output) == {2}
    assert files(one) == files(two)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    return a, b


def processes_logged(output: str) -> set[int]:
    return {int(n) for n in re.findall(r"(\d+) processes, batch", output)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with the shipped configs and 24 phantom studies at runs/phantom_tiny."""
    import torch

    from medvl.data.phantom import generate_phantoms

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("jobs")
    (root / "configs").symlink_to(ROOT / "configs")
    generate_phantoms(24, root / "runs" / "phantom_tiny", seed=1, size=64, workers=1,
                      progress=False)  # fmt: skip
    return root


def stage_losses(run: Path) -> list[float]:
    rows = [
        json.loads(x) for x in (run / "01-contrastive" / "metrics.jsonl").read_text().splitlines()
    ]
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.fixture(scope="module")
def pretrained(workdir) -> tuple[Path, Path, str]:
    """The README's torchrun pretrain (2 ranks, batch 4 each) and 1 process at batch 8."""
    stages = (
        "stages=[{kind: contrastive, data: {manifest: runs/phantom_tiny/studies.jsonl, "
        "augment: false}, train: {log_every: 1}}]"
    )
    common = ["model=tiny", stages, "train.max_steps=3", *SMALL_TRAIN]
    line = multi_process_commands(readme_block)["torchrun", "pretrain"]
    two = launch(line, workdir, [*common, "train.batch_size=4", "output_dir=runs/dapt_two"])
    single([*job_args(line), *common, "train.batch_size=8", "output_dir=runs/dapt_phantom_tiny"],
           workdir)  # fmt: skip
    return workdir / "runs" / "dapt_phantom_tiny", workdir / "runs" / "dapt_two", two


def test_pretrain_two_ranks_match_one(pretrained):
    one, two, output = pretrained
    assert processes_logged(output) == {2}
    assert files(one) == files(two)
    assert (two / "01-contrastive" / "checkpoints" / "step-00000003" / "rng-1.pt").is_file()
    # the same global batch of 8 (negatives gathered across ranks: log 8 = 2.08, where 4
    # separate batches of 4 would give ~log 4 = 1.39); batch-norm statistics stay per rank
    # (no SyncBatchNorm), which moves the losses by ~1%
    assert stage_losses(two) == pytest.approx(stage_losses(one), rel=0.02)


def test_pretrain_under_accelerate_launch_is_one_group(workdir, pretrained, readme_code):
    stages = "stages=[{kind: contrastive, data: {manifest: runs/phantom_tiny/studies.jsonl}}]"
    extra = ["model=tiny", stages, "train.max_steps=3", "train.batch_size=4", *SMALL_TRAIN,
             "output_dir=runs/dapt_accelerate"]  # fmt: skip
    output = launch(multi_process_commands(readme_code)["accelerate", "pretrain"], workdir, extra)
    assert processes_logged(output) == {2}
    assert files(workdir / "runs" / "dapt_accelerate") == files(pretrained[1])


def test_finetune_two_ranks_match_one(workdir, pretrained, readme_code):
    common = ["train.max_steps=3", "train.eval_every=0", "data.augment=false", *SMALL_TRAIN]
    line = multi_process_commands(readme_code)["torchrun", "finetune"]
    a, b = two_ranks_and_one(line, workdir, common, "ft")
    assert (a["train_examples"], a["trainable_parameters"]) == (
        b["train_examples"],
        b["trainable_parameters"],
    )
    assert b["macro_auroc"] == pytest.approx(a["macro_auroc"], abs=0.02)


def test_segment_finetune_two_ranks_match_one(workdir, readme_code):
    common = ["train.max_steps=2", "train.eval_every=0", "model.img_size=64",
              "data.source=manifest", "data.path=runs/phantom_tiny/studies.jsonl",
              "eval.overlays=0",
              "cache.dir=runs/sam_cache", "train.progress=false"]  # fmt: skip
    line = multi_process_commands(readme_code)["torchrun", "segment-finetune"]
    a, b = two_ranks_and_one(line, workdir, common, "sam")
    assert b["initial_val_dice"] == pytest.approx(a["initial_val_dice"], abs=1e-6)
    dice = [m["splits"]["val"]["all"]["dice_mean"] for m in (a, b)]
    # prompt jitter is drawn per rank, so 2 steps of training move Dice a little differently
    assert dice[1] == pytest.approx(dice[0], abs=0.01)


def test_zeroshot_under_accelerate_launch_writes_the_one_process_result(
    workdir, pretrained, readme_code
):
    line = multi_process_commands(readme_code)["accelerate", "zeroshot"]
    output = launch(line, workdir, ["data.split=train"])
    assert output.count("results in") == 1  # one result, reported once by the main rank
    single([*job_args(line), "-o", "runs/zs_one", "data.split=train"], workdir)
    one, two = workdir / "runs" / "zs_one", workdir / "runs" / "zeroshot_tiny"
    assert files(one) == files(two)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert a["classification"] == b["classification"] and a["retrieval"] == b["retrieval"]
    assert (one / "probabilities.csv").read_text() == (two / "probabilities.csv").read_text()
