"""The README's "PACS-adjacent inference" commands, run as written in a scratch folder.

The models (tiny, random) and studies are created where the commands expect them; the
listener's port is swapped for a free one so parallel runs cannot collide.
"""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medvl.cli import app

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infer"))
from infer_dicom import PLANTED_ID, make_cr  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_pacs_section_runs(readme_code, tmp_path, monkeypatch) -> None:
    from medvl.models.aligner import create_aligner
    from medvl.models.sam import SamConfig, build_sam

    lines = [
        ln.split("  #", 1)[0]
        for ln in readme_code("### PACS-adjacent inference", "bash").splitlines()
    ]
    commands = [shlex.split(ln)[1:] for ln in lines if ln.strip()]
    assert [c[0] for c in commands] == ["infer", "infer", "listen", "listen"]
    monkeypatch.chdir(tmp_path)
    create_aligner("tiny").save_pretrained(Path("runs/merged"))
    build_sam(SamConfig(variant="tiny")).save_pretrained(Path("runs/sam/model"))
    for name, views in (("study-123", ("PA", "AP")), ("other", ("PA",))):
        uid = generate_uid()
        Path("incoming", name).mkdir(parents=True)
        for k, view in enumerate(views):
            make_cr(Path("incoming", name, f"{k}.dcm"), study_uid=uid, view=view, seed=k)

    runner = CliRunner()
    for argv in commands[:2]:
        done = runner.invoke(app, argv)
        assert done.exit_code == 0, done.output
        assert "study-123" not in done.output and PLANTED_ID not in done.output
    assert len(list(Path("results").glob("*/result.json"))) == 2
    assert len(list(Path("results").glob("*/seg_*.dcm"))) == 2  # from the first command

    listen = commands[2]
    listen[listen.index("--port") + 1] = str(_free_port())
    proc = subprocess.Popen([str(Path(sys.executable).parent / "medvl"), *listen])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            probe = runner.invoke(app, commands[3])
            if probe.exit_code == 0:
                break
            time.sleep(0.5)
        assert probe.exit_code == 0, probe.output
        status = json.loads(probe.output)
        assert status["worker_alive"] and status["queue_depth"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stopped = runner.invoke(app, commands[3])
    assert stopped.exit_code == 1 and json.loads(stopped.output)["running"] is False
