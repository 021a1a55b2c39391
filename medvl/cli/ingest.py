"""``medvl ingest DIR --out OUT`` and ``medvl info FILE``.

``ingest`` walks a folder of DICOM files (any depth, any names, DICOMDIR too) and writes
``images.jsonl``, ``failures.jsonl`` and the resolved ``config.yaml``. The salt for patient keys
comes from the ``MEDVL_SALT`` environment variable, so it is never written beside the manifest.
``info`` prints one file's safe metadata as JSON (hashed UIDs; never patient identifiers).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

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

SALT_ENV = "MEDVL_SALT"
INFO_FIELDS_DROPPED = ("pixels",)


def ingest_command(
    root: Path = typer.Argument(..., help="Folder to walk (any depth, any file names)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the manifests."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Worker processes."),
    decode_check: bool | None = typer.Option(
        None, "--decode-check/--no-decode-check", help="Also decode pixels (slower, stricter)."
    ),
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """Read every DICOM header below ROOT into OUT/images.jsonl; bad files go to failures.jsonl.

    Overrides: workers=N, decode_check=true, chunk_size=N. Patient keys are hashed with the
    salt in $MEDVL_SALT (set it for manifests that leave the site).
    """
    from medvl.data.ingest import IngestConfig, ingest_directory

    setup_logging(verbose)
    cfg = job_config(IngestConfig, config, overrides)
    if workers is not None:
        cfg.workers = workers
    if decode_check is not None:
        cfg.decode_check = decode_check
    salt = os.environ.get(SALT_ENV, "")
    if not salt:
        typer.echo(
            f"warning: {SALT_ENV} is not set; patient keys are unsalted hashes of PatientID",
            err=True,
        )
    output_folder(out)
    with exit_on_error():
        result = ingest_directory(
            root,
            out,
            workers=cfg.workers,
            decode_check=cfg.decode_check,
            salt=salt,
            chunk_size=cfg.chunk_size,
            progress=True,
        )
    from medvl.data.processes import process_state

    if process_state().is_main_process:  # torchrun: the main rank wrote the manifests
        save_resolved(cfg, out)
    summary = result.summary()
    echo_main(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()))
    echo_main(f"manifest: {result.manifest}")
    if result.failures:
        echo_main(f"{result.failures} files skipped; reasons in {result.failures_file}")


def info_command(
    file: Path = typer.Argument(..., help="A DICOM file."),
    decode: bool = typer.Option(
        False, "--decode/--no-decode", help="Decode pixels and add display-value statistics."
    ),
) -> None:
    """Print the safe metadata of one DICOM file as JSON (no patient identifiers)."""
    from medvl.data.ingest import file_sha256
    from medvl.io.dicom import read_dicom

    with exit_on_error():
        image = read_dicom(file, decode=decode)
        content_hash = file_sha256(file)
    info = {
        f.name: getattr(image, f.name)
        for f in dataclasses.fields(image)
        if f.name not in INFO_FIELDS_DROPPED
    }
    info["content_hash"] = content_hash
    if image.pixels is not None:
        pixels = image.pixels
        info["pixel_stats"] = {
            "shape": list(pixels.shape),
            "min": float(pixels.min()),
            "max": float(pixels.max()),
            "mean": float(pixels.mean()),
        }
    echo_main(json.dumps(info, indent=2, default=list))


def register(app: typer.Typer) -> None:
    """Attach ``ingest`` and ``info`` to the main app."""
    app.command("ingest")(ingest_command)
    app.command("info")(info_command)
