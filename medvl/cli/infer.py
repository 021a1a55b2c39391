"""``medvl infer`` (study folders in, JSON + SEG + SR out) and ``medvl listen`` (DICOM SCP)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import typer

from medvl.cli.common import (
    CONFIG_OPTION,
    OVERRIDES_ARGUMENT,
    exit_on_error,
    job_config,
    save_resolved,
    setup_logging,
)

FINETUNED_OPTION = typer.Option(
    None, "--finetuned", help="A `medvl finetune` output folder (its head replaces the prompts)."
)


def _config(
    config: Path | None,
    overrides: list[str] | None,
    model: str | None,
    sam: str | None,
    adapter: str | None,
    finetuned: str | None,
    include_identifiers: bool,
):
    from medvl.infer.pipeline import InferConfig

    given = (("model", model), ("sam", sam), ("adapter", adapter), ("finetuned", finetuned))
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
    sam: str | None = typer.Option(None, "--sam", help="Saved SAM directory (segmentation)."),
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

    Writes ``OUT/<study>/result.json`` (+ DICOM SEG and SR). Exits non-zero only when no image
    of any study could be analysed.
    """
    from tqdm import tqdm

    from medvl.infer.batch import StudyOutcome, infer_folders, study_folders

    setup_logging(verbose)
    cfg = _config(config, overrides, model, sam, adapter, finetuned, include_identifiers)
    if not study_dir.is_dir():
        typer.echo(f"error: {study_dir}: not a folder", err=True)
        raise typer.Exit(2)
    folders = study_folders(study_dir, per_study=studies)
    pipeline = _load_pipeline(cfg)
    save_resolved(cfg, out)

    def report(study: StudyOutcome) -> None:
        typer.echo(
            f"{study.folder.name}: {study.analysed} analysed, {study.skipped} skipped, "
            f"{study.seconds:.2f} s -> {study.output}"
        )

    progress = tqdm(folders, desc="studies", unit="study", disable=len(folders) < 2)
    summary = infer_folders(pipeline, progress, out, on_study=report)
    if summary.analysed == 0:
        typer.echo("error: no image could be analysed", err=True)
        raise typer.Exit(1)


def listen_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    ae_title: str = typer.Option("MEDVL", "--ae-title"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(11112, "--port"),
    forward: str | None = typer.Option(None, "--forward", help="AE@host:port for results."),
    quiet_seconds: float = typer.Option(10.0, "--quiet-seconds"),
    model: str | None = typer.Option(None, "--model", help="Saved aligner directory."),
    sam: str | None = typer.Option(None, "--sam", help="Saved SAM directory."),
    adapter: str | None = typer.Option(None, "--adapter", help="LoRA adapter directory."),
    finetuned: str | None = FINETUNED_OPTION,
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Receive studies by C-STORE, analyse each after a quiet period, optionally forward results.

    Stops cleanly on SIGTERM or Ctrl-C: no new associations, received studies are finished.
    """
    from medvl.infer.export import export_study
    from medvl.infer.listener import ListenerConfig, StudyListener

    setup_logging(verbose)
    cfg = _config(config, overrides, model, sam, adapter, finetuned, False)
    pipeline = _load_pipeline(cfg)
    results = out / "results"

    def process(folder: Path) -> list[Path]:
        result = pipeline.run_study(folder)
        return export_study(
            result, results / result.study_uid_hash, write_seg=cfg.write_seg, write_sr=cfg.write_sr
        )

    listener_cfg = ListenerConfig(
        ae_title=ae_title,
        host=host,
        port=port,
        output_dir=out,
        quiet_seconds=quiet_seconds,
        forward=forward,
    )
    save_resolved(cfg, out)
    listener = StudyListener(listener_cfg, process)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    listener.start()
    typer.echo(f"listening as {ae_title} on {host}:{port}; results in {results}")
    stop.wait()
    typer.echo("stopping: finishing received studies")
    listener.stop()


def register(app: typer.Typer) -> None:
    """Add ``infer`` and ``listen`` to the ``medvl`` app."""
    app.command("infer")(infer_command)
    app.command("listen")(listen_command)
