"""The ``medvl`` command line: a thin layer over the public functions.

Each command group lives in its own module with a ``register(app)`` function; every command
that runs a job takes ``--config FILE`` and dotted ``key=value`` overrides.
"""

from __future__ import annotations

import importlib

import typer

from medvl.cli.common import OneLineErrors, main_options

app = typer.Typer(
    name="medvl",
    help="Medical-imaging domain adaptation with radiology reports.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold PHI from headers
    cls=OneLineErrors,  # every error: one stderr line (traceback with medvl --debug)
)
app.callback()(main_options)

COMMAND_MODULES: tuple[str, ...] = (
    "data",
    "ingest",
    "label",
    "zeroshot",
    "train",
    "segment",
    "infer",
    "demo",
    "export",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"medvl.cli.{_name}").register(app)
