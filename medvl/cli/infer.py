"""``medvl infer`` (study folders in, JSON + SEG + SR out) and ``medvl listen`` (DICOM SCP)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import typer

from medvl.cli.common import (
    CONFIG_OPTION,
    OVERRIDES_ARGUMENT,
    echo_main,
    exit_on_error,
    job_config,
    save_resolved,
    setup_logging,
)

FINETUNED_OPTION = typer.Option(
    None, "--finetuned", help="A `medvl finetune` output folder (its head replaces the prompts)."
)
SAM_OPTION = typer.Option(
    None, "--sam", help="Saved SAM directory or SAM/MedSAM checkpoint (segmentation)."
)
SAM_PREPROCESSING_OPTION = typer.Option(
    None,
    "--sam-preprocessing",
    help="sam or medsam (MedSAM weights); default: the saved SAM's own, sam for checkpoints.",
)


def _config(
    config: Path | None,
    overrides: list[str] | None,
    model: str | None,
    sam: str | None,
    adapter: str | None,
    finetuned: str | None,
    include_identifiers: bool,
    sam_preprocessing: str | None = None,
):
    from medvl.infer.pipeline import InferConfig

    given = (
        ("model", model),
        ("sam", sam),
        ("sam_preprocessing", sam_preprocessing),
        ("adapter", adapter),
        ("finetuned", finetuned),
    )
    extra = [f"{k}={v}" for k, v in given if v]
    if include_identifiers:
        extra.append("include_identifiers=true")
    return job_config(InferConfig, config, [*(overrides or []), *extra])


def _load_pipeline(cfg: Any) -> Any:
    """The models of ``cfg``, loaded once; a missing or unusable model is a usage error (2)."""
    from medvl.infer.pipeline import InferencePipeline

    with exit_on_error(2):
        return InferencePipeline(cfg)


def infer_command(
    study_dir: Path = typer.Argument(..., help="A study folder (any depth), or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    model: str | None = typer.Option(None, "--model", help="Saved aligner directory."),
    sam: str | None = SAM_OPTION,
    sam_preprocessing: str | None = SAM_PREPROCESSING_OPTION,
    adapter: str | None = typer.Option(None, "--adapter", help="LoRA adapter directory."),
    finetuned: str | None = FINETUNED_OPTION,
    studies: bool = typer.Option(
        False, "--studies", help="STUDY_DIR holds one sub-folder per study."
    ),
    include_identifiers: bool = typer.Option(
        False, "--include-identifiers", help="Put patient/study identifiers into the JSON."
    ),
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run findings classification (and segmentation) on DICOM studies.

    Writes ``OUT/<study key>/result.json`` (+ DICOM SEG and SR) and ``OUT/summary.json``. With
    ``--studies``, instances are grouped by StudyInstanceUID across the sub-folders, which are
    named by index, never by name. Each study fails alone; exits 1 only when no image of any
    study could be analysed.
    """
    from tqdm import tqdm

    from medvl.infer.batch import StudyOutcome, infer_folders, study_folders

    setup_logging(verbose)
    cfg = _config(
        config, overrides, model, sam, adapter, finetuned, include_identifiers, sam_preprocessing
    )
    if not study_dir.is_dir():
        typer.echo(f"error: {study_dir}: not a folder", err=True)
        raise typer.Exit(2)
    folders = study_folders(study_dir, per_study=studies)
    pipeline = _load_pipeline(cfg)
    from medvl.data.processes import process_state

    if process_state().is_main_process:  # torchrun: one copy, from the main rank
        save_resolved(cfg, out)

    def report(study: StudyOutcome) -> None:
        where = ",".join(f"#{i}" for i in study.folders) or "-"
        if study.error:
            typer.echo(f"study {study.study} (folders {where}): failed: {study.error}")
            return
        typer.echo(
            f"study {study.study} (folders {where}): {study.analysed} analysed, "
            f"{study.skipped} skipped, {study.seconds:.2f} s"
        )

    def progress(keys):
        return tqdm(keys, desc="studies", unit="study", disable=len(keys) < 2)

    summary = infer_folders(pipeline, folders, out, on_study=report, progress=progress)
    for problem in summary.problems:
        echo_main(f"folder #{problem.folder}: skipped: {problem.reason}")
    echo_main(f"results in {out} (summary.json lists studies and folders by index)")
    if summary.analysed == 0:
        typer.echo("error: no image could be analysed", err=True)
        raise typer.Exit(1)


def listen_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (state, results, status)."),
    ae_title: str = typer.Option("MEDVL", "--ae-title"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(11112, "--port"),
    forward: str | None = typer.Option(None, "--forward", help="AE@host:port for results."),
    stow: str | None = typer.Option(
        None, "--stow", help="DICOMweb base URL: also STOW-RS results to URL/studies."
    ),
    stow_auth_env: str | None = typer.Option(
        None, "--stow-auth-env", help="Environment variable holding STOW's Authorization header."
    ),
    quiet_seconds: float = typer.Option(10.0, "--quiet-seconds"),
    retention: str = typer.Option(
        "days:7", "--retention", help="Received instances once done: keep, delete or days:N."
    ),
    status: bool = typer.Option(
        False, "--status", help="Print the running listener's status JSON for OUT and exit."
    ),
    model: str | None = typer.Option(None, "--model", help="Saved aligner directory."),
    sam: str | None = SAM_OPTION,
    sam_preprocessing: str | None = SAM_PREPROCESSING_OPTION,
    adapter: str | None = typer.Option(None, "--adapter", help="LoRA adapter directory."),
    finetuned: str | None = FINETUNED_OPTION,
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Receive studies by C-STORE, analyse each after a quiet period, optionally forward results.

    State lives on disk under OUT (studies/, results/<study>/v<N>/, dead-letter/, status.json)
    and survives kill -9. SIGTERM or Ctrl-C stops within 10 s with exit 0 (unfinished studies
    resume on the next start); the worker dying exits 1. ``--status`` exits 1 when unhealthy.
    """
    import json

    from medvl.infer.listener import ListenerConfig, Retention, StudyListener, healthy, read_status

    if status:
        with exit_on_error(2):
            document = read_status(out)
        echo_main(json.dumps(document, indent=2))
        raise typer.Exit(0 if healthy(document) else 1)
    setup_logging(verbose)
    with exit_on_error(2):
        Retention.parse(retention)
        if forward:
            from medvl.infer.listener import parse_destination

            parse_destination(forward)
        if stow:
            from medvl.infer.listener.stow import auth_headers, check_stow_url

            check_stow_url(stow)
            auth_headers(stow_auth_env)
    cfg = _config(config, overrides, model, sam, adapter, finetuned, False, sam_preprocessing)
    pipeline = _load_pipeline(cfg)
    from medvl.infer.listener.processor import PipelineProcessor

    listener_cfg = ListenerConfig(
        ae_title=ae_title,
        host=host,
        port=port,
        output_dir=out,
        quiet_seconds=quiet_seconds,
        forward=forward,
        stow_url=stow,
        stow_auth_env=stow_auth_env,
        retention=retention,
    )
    save_resolved(cfg, out)
    listener = StudyListener(listener_cfg, PipelineProcessor(pipeline))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    listener.start()
    echo_main(f"listening as {ae_title} on {host}:{port}; results in {out / 'results'}")
    while not stop.wait(0.2) and not listener.dead.is_set():
        pass
    echo_main("stopping: unfinished studies resume on the next start")
    listener.stop()
    if listener.dead.is_set():
        typer.echo(f"error: {listener.stats.last_error}", err=True)
    _exit_now(1 if listener.dead.is_set() else 0)


def _exit_now(code: int) -> None:
    """Exit without interpreter finalisation once everything is on disk.

    Tearing down torch and its thread pools takes seconds (8 s measured on a busy 2-core
    machine), which would break "SIGTERM exits within 10 s"; the listener's state is durable
    and its files are closed, so logs and streams are flushed and the process ends here.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def register(app: typer.Typer) -> None:
    """Add ``infer`` and ``listen`` to the ``medvl`` app."""
    app.command("infer")(infer_command)
    app.command("listen")(listen_command)
