"""Helpers shared by CLI commands: config loading with readable errors, logging set-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import typer

from medvl.config import ConfigError, load_config, save_config

T = TypeVar("T")

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file.")
OVERRIDES_ARGUMENT = typer.Argument(None, help="Dotted overrides, e.g. train.lr=1e-4.")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``); library code only ever uses ``logging``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # highdicom narrates every attribute it copies at INFO
        logging.getLogger("highdicom").setLevel(logging.WARNING)


def job_config(cls: type[T], config: Path | None, overrides: list[str] | None) -> T:
    """Load a job config or exit with status 2 and the config error (key named) on stderr."""
    try:
        return load_config(cls, config, overrides or [])
    except ConfigError as err:
        typer.echo(f"config error: {err}", err=True)
        raise typer.Exit(2) from None


def save_resolved(config: object, out_dir: Path) -> Path:
    """Save the resolved config beside a run's outputs as ``config.yaml``."""
    return save_config(config, Path(out_dir) / "config.yaml")


@contextmanager
def exit_on_error(code: int = 1) -> Iterator[None]:
    """Turn a job's user-facing errors (missing files, bad values) into one line and exit ``code``.

    ``FileNotFoundError`` and ``ValueError`` (which checksum and DICOM errors derive from) carry
    messages that name the file and the problem; anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code) from None
