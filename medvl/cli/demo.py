"""``medvl demo``: the whole mission on the embedded default data (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from medvl.cli.common import CONFIG_OPTION, OVERRIDES_ARGUMENT, job_config, setup_logging


def demo_command(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Phantoms -> ingest -> zero-shot -> DAPT -> zero-shot -> LoRA -> SAM -> PACS inference.

    Example: medvl demo -c configs/demo_small.yaml output_dir=runs/demo_small
    """
    from medvl.demo import DemoConfig, run_demo

    setup_logging(verbose)
    cfg = job_config(DemoConfig, config, overrides)
    run_demo(cfg)
    typer.echo((cfg.output_dir / "summary.md").read_text())


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the ``medvl`` app."""
    app.command("demo")(demo_command)
