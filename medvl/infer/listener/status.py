"""The listener's health file, ``<output_dir>/status.json``, and how ``--status`` reads it.

The listener rewrites the file every second (atomically): queue depth, studies per state,
counters, the last error (a reason, never patient data) and whether the worker is alive. A
supervisor or a monitoring probe reads it with ``medvl listen --status --out DIR``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
STALE_SECONDS = 10.0


def read_status(output_dir: Path) -> dict[str, Any]:
    """The last status the listener wrote, or a ValueError naming the file when there is none."""
    path = Path(output_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no status file (has the listener run here?)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None


def healthy(status: dict[str, Any], now: float | None = None) -> bool:
    """Running, worker alive and the file fresh (the listener rewrites it every second)."""
    now = time.time() if now is None else now
    return (
        status.get("running", False)
        and status.get("worker_alive", False)
        and now - float(status.get("updated", 0.0)) < STALE_SECONDS
    )
