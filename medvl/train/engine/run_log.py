"""Run metrics: one JSON object per line in ``metrics.jsonl`` plus TensorBoard scalars.

The JSONL file is the record a script or notebook reads back (``read_metrics``); TensorBoard is
for watching a run live. Only the main process writes. On resume, rows logged after the
checkpoint by the interrupted run are dropped (and TensorBoard purges them), so the files show
one continuous trajectory. A last line torn by a kill or a full disk is dropped with a warning
(:func:`medvl.io.durable.read_jsonl`); a full disk while logging is a
:class:`~medvl.io.durable.DiskFullError` naming the folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from medvl.io.durable import append_jsonl, read_jsonl, write_jsonl_atomic

METRICS_FILE = "metrics.jsonl"


def read_metrics(output_dir: Path) -> list[dict[str, Any]]:
    """All rows of a run's ``metrics.jsonl`` (empty list when absent)."""
    file = Path(output_dir) / METRICS_FILE
    if not file.is_file():
        return []
    return read_jsonl(file)


class RunLogger:
    """Append rows to ``metrics.jsonl`` and TensorBoard.

    Parameters
    ----------
    output_dir
        Run folder; TensorBoard events go to ``output_dir/tensorboard``.
    enabled
        ``False`` on non-main processes: every call is then a no-op.
    tensorboard
        Also write TensorBoard events.
    resume_step
        Step the run resumes from; rows with a larger step are removed first.
    """

    def __init__(
        self, output_dir: Path, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0
    ) -> None:
        self.enabled = enabled
        self.file = Path(output_dir) / METRICS_FILE
        self.writer = None
        if not enabled:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        if resume_step and self.file.is_file():
            kept = [r for r in read_metrics(output_dir) if r.get("step", 0) <= resume_step]
            write_jsonl_atomic(self.file, kept)
        elif not resume_step:
            write_jsonl_atomic(self.file, [])
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(Path(output_dir) / "tensorboard"),
                purge_step=resume_step + 1 if resume_step else None,
            )

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Write one row: ``{"step": step, **values}``; non-finite floats become ``null``."""
        if not self.enabled:
            return
        row: dict[str, Any] = {"step": step}
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            row[key] = value
        append_jsonl(self.file, row)
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
