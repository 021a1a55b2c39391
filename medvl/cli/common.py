"""Helpers shared by CLI commands: config loading with readable errors, logging set-up.

Every failure of a command is one line on stderr naming the file and the problem, with exit
status 2 for usage and config errors and 1 for runtime failures; the global ``--debug`` option
(``medvl --debug COMMAND ...``) shows the traceback instead. :class:`OneLineErrors` does this
for every command of the app; :func:`exit_on_error` and :func:`job_config` are the same rule
inside a command.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from medvl.config import ConfigError, load_config, save_config

T = TypeVar("T")

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file.")
OVERRIDES_ARGUMENT = typer.Argument(None, help="Dotted overrides, e.g. train.lr=1e-4.")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``); library code only ever uses ``logging``.

    Under torchrun / accelerate launch every rank logs its own share of the work; a command's
    result lines are printed once, by :func:`echo_main`.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # highdicom narrates every attribute it copies at INFO
        logging.getLogger("highdicom").setLevel(logging.WARNING)


def echo_main(message: str) -> None:
    """Print a command's result line once: from the main process only under a launcher."""
    if os.environ.get("RANK", "0") == "0":
        typer.echo(message)


DEBUG_OPTION = typer.Option(False, "--debug", help="On an error, show the full traceback.")


_DEBUG = {"on": False}  # set by the app's callback before the command runs


def debug_enabled() -> bool:
    """Whether the global ``--debug`` option is set for the running command."""
    return _DEBUG["on"]


def main_options(debug: bool = DEBUG_OPTION) -> None:
    """Medical-imaging domain adaptation with radiology reports."""
    _DEBUG["on"] = debug


def error_line(err: BaseException) -> str:
    """One line saying what went wrong: file and problem for OS errors, the message otherwise."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    lines = [line for line in str(err).splitlines() if line.strip()]
    text = lines[0].strip() if lines else ""
    ours = type(err).__module__.startswith("medvl.")  # DicomReadError & co: written to be read
    if text and (ours or isinstance(err, (ValueError, OSError))):
        return text
    kind = type(err).__name__
    return f"{kind}: {text} (run with --debug for the traceback)" if text else kind


def exit_code(err: BaseException) -> int:
    """2 for config and usage errors, 1 for runtime failures."""
    return 2 if isinstance(err, ConfigError) else 1


class OneLineErrors(TyperGroup):
    """The app's command group: an exception becomes one stderr line and an exit status."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except Exception as err:
            if debug_enabled():
                raise
            prefix = "config error" if isinstance(err, ConfigError) else "error"
            typer.echo(f"{prefix}: {error_line(err)}", err=True)
            raise typer.Exit(exit_code(err)) from None


def job_config(cls: type[T], config: Path | None, overrides: list[str] | None) -> T:
    """Load a job config or exit with status 2 and the config error (key named) on stderr."""
    try:
        return load_config(cls, config, overrides or [])
    except ConfigError as err:
        if debug_enabled():
            raise
        typer.echo(f"config error: {err}", err=True)
        raise typer.Exit(2) from None


def output_folder(path: Path, option: str = "--out") -> Path:
    """``path`` as an output folder (created); a path that is a file is a usage error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file; give a folder to write into")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_resolved(config: object, out_dir: Path) -> Path:
    """Save the resolved config beside a run's outputs as ``config.yaml``."""
    return save_config(config, Path(out_dir) / "config.yaml")


@contextmanager
def exit_on_error(code: int = 1) -> Iterator[None]:
    """Turn a job's user-facing errors (missing files, bad values) into one line and exit ``code``.

    ``OSError`` (missing files, a full disk) and ``ValueError`` (which checksum, checkpoint and
    DICOM errors derive from) carry messages that name the file and the problem; a
    :class:`~medvl.config.ConfigError` exits 2. Anything else reaches :class:`OneLineErrors`.
    """
    try:
        yield
    except (OSError, ValueError) as err:
        if debug_enabled():
            raise
        prefix = "config error" if isinstance(err, ConfigError) else "error"
        typer.echo(f"{prefix}: {error_line(err)}", err=True)
        raise typer.Exit(2 if isinstance(err, ConfigError) else code) from None
