"""``medvl listen`` usage errors and ``--status``: one line, exit 2, before any model loads."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from medvl.cli import app


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["listen", "--status", "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "status.json: no status file" in missing.output
    bad = runner.invoke(app, ["listen", "--out", str(tmp_path), "--retention", "forever"])
    assert bad.exit_code == 2 and "keep, delete or days:N" in bad.output
    bad = runner.invoke(app, ["listen", "--out", str(tmp_path), "--forward", "PACS:104"])
    assert bad.exit_code == 2 and "AE@host:port" in bad.output
    assert "Traceback" not in bad.output


def test_status_exit_code_follows_health(tmp_path: Path) -> None:
    runner = CliRunner()
    status = {"running": True, "worker_alive": True, "updated": time.time(), "queue_depth": 3}
    (tmp_path / "status.json").write_text(json.dumps(status))
    ok = runner.invoke(app, ["listen", "--status", "--out", str(tmp_path)])
    assert ok.exit_code == 0 and json.loads(ok.output)["queue_depth"] == 3
    for change in ({"worker_alive": False}, {"updated": time.time() - 60}, {"running": False}):
        (tmp_path / "status.json").write_text(json.dumps({**status, **change}))
        assert runner.invoke(app, ["listen", "--status", "--out", str(tmp_path)]).exit_code == 1


def test_worker_death_exits_1(tmp_path: Path, monkeypatch) -> None:
    import socket

    import medvl.cli.infer as cli
    from medvl.infer.listener.store import StudyStore

    def broken(*_):
        raise OSError("disk gone")

    class FakePipeline:
        config = None

    def exit_now(code: int) -> None:  # the real one ends the process (pytest with it)
        raise SystemExit(code)

    monkeypatch.setattr(cli, "_exit_now", exit_now)
    monkeypatch.setattr(cli, "_load_pipeline", lambda cfg: FakePipeline())
    monkeypatch.setattr(StudyStore, "take_complete", broken)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = CliRunner().invoke(
        app, ["listen", "--out", str(tmp_path), "--port", str(port), "--model", "unused"]
    )
    assert done.exit_code == 1
    assert "worker died: OSError" in done.output
