"""``medvl zeroshot`` and ``medvl evaluate``: zero-shot findings and retrieval on a manifest.

Both read a Study manifest (``studies.jsonl``), take one split (``data.split=test`` by
default), embed every readable image with a saved aligner and write results and plots to
``--out`` (see :mod:`medvl.eval.jobs`). Unreadable images are skipped and listed in
``failures.jsonl``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from medvl.cli.common import (
    CONFIG_OPTION,
    OVERRIDES_ARGUMENT,
    echo_main,
    exit_on_error,
    job_config,
    output_folder,
    save_resolved,
    setup_logging,
)

MODEL_OPTION = typer.Option(..., "--model", "-m", help="Saved aligner directory.")
DATA_OPTION = typer.Option(..., "--data", "-d", help="Study manifest (studies.jsonl).")
OUT_OPTION = typer.Option(..., "--out", "-o", help="Output folder.")
VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")


def _progress(description: str):
    from tqdm import tqdm

    return lambda iterable: tqdm(iterable, desc=description, unit="batch")


def _run_job(
    job_type: type,
    runner: Callable[..., dict[str, Any]],
    description: str,
    model: Path,
    data: Path,
    out: Path,
    config: Path | None,
    overrides: list[str] | None,
    verbose: bool,
) -> dict[str, Any]:
    """Resolve the job config, run it with progress, save the resolved config; exit 1 on error."""
    setup_logging(verbose)
    job = job_config(job_type, config, overrides)
    output_folder(out)
    with exit_on_error():
        result = runner(model, data, out, job, progress=_progress(description))
    from medvl.data.processes import process_state

    if process_state().is_main_process:  # torchrun: the main rank wrote the results
        save_resolved(job, out)
    return result


def zeroshot_command(
    model: Path = MODEL_OPTION,
    data: Path = DATA_OPTION,
    out: Path = OUT_OPTION,
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Zero-shot CheXpert findings: probabilities.csv, metrics.json, roc.png, heatmap.

    Overrides: data.split=test, data.views=[PA,AP], data.cache=DIR, data.batch_size=32,
    data.device=auto, prompts=FILE, calibrate_on=val, calibration=FILE, threshold=0.5,
    uncertain=ignore|positive|negative.
    """
    from medvl.eval.jobs import ZeroShotJob, run_zeroshot

    result = _run_job(ZeroShotJob, run_zeroshot, "zero-shot", model, data, out, config, overrides,
                      verbose)  # fmt: skip
    macro = result["classification"]["macro"]
    counts = result["counts"]
    auroc = "n/a" if macro["auroc"] is None else f"{macro['auroc']:.3f}"
    echo_main(
        f"{counts['images']} images ({counts['failures']} unreadable), macro AUROC {auroc} "
        f"over {macro['n_findings']} findings; results in {out}"
    )


def evaluate_command(
    model: Path = MODEL_OPTION,
    data: Path = DATA_OPTION,
    out: Path = OUT_OPTION,
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Image-report retrieval: retrieval.json (R@1/5/10, median rank), example and heatmap PNGs.

    Overrides: data.split=test, data.views=[PA,AP], data.cache=DIR, data.batch_size=32,
    data.device=auto, examples=4, top_k=3.
    """
    from medvl.eval.jobs import RetrievalJob, run_retrieval

    result = _run_job(RetrievalJob, run_retrieval, "retrieval", model, data, out, config,
                      overrides, verbose)  # fmt: skip
    i2t, t2i = result["retrieval"]["image_to_text"], result["retrieval"]["text_to_image"]
    echo_main(
        f"image->report R@1 {i2t['R@1']:.3f} R@5 {i2t['R@5']:.3f} R@10 {i2t['R@10']:.3f} "
        f"(chance R@5 {i2t['chance']['R@5']:.3f}); report->image R@5 {t2i['R@5']:.3f}; "
        f"results in {out}"
    )


def register(app: typer.Typer) -> None:
    """Attach ``zeroshot`` and ``evaluate`` to the main app."""
    app.command("zeroshot")(zeroshot_command)
    app.command("evaluate")(evaluate_command)
