"""``medvl export``: hand an adapted model back in its own library's format."""

from __future__ import annotations

from pathlib import Path

import typer

from medvl.cli.common import exit_on_error, setup_logging

VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")


def export_command(
    model: Path = typer.Argument(
        ..., help="A saved medvl aligner (or any model create_aligner reads)."
    ),
    to: str = typer.Option(..., "--to", help="hf | open_clip | text-encoder"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write."),
    adapter: Path | None = typer.Option(
        None, "--adapter", help="A medvl LoRA adapter of MODEL: rewritten into OUT/adapter."
    ),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Write MODEL as a transformers CLIP/SigLIP directory (hf), an open_clip hub directory
    (open_clip) or its text tower as an AutoModel directory (text-encoder); with --adapter,
    its LoRA adapter keyed to the exported model's own module names."""
    from medvl.models.aligner import create_aligner
    from medvl.models.formats.export import EXPORT_TARGETS, export_adapter, export_aligner

    setup_logging(verbose)
    if to not in EXPORT_TARGETS:
        typer.echo(f"error: --to {to!r}: expected one of {list(EXPORT_TARGETS)}", err=True)
        raise typer.Exit(2)
    with exit_on_error():
        aligner = create_aligner(str(model))
        export_aligner(aligner, to, out)
        if adapter is not None:
            export_adapter(aligner, adapter, to, out / "adapter")
    typer.echo(f"exported {model} as {to}: {out}")


def register(app: typer.Typer) -> None:
    """Attach ``export`` to the main app."""
    app.command("export")(export_command)
