"""``medvl label REPORTS.csv|DIR --out labels.csv``: CheXpert-14 labels of radiology reports.

A thin layer over :func:`medvl.io.labeler.label_reports`; the output is the CheXpert labeler's
CSV (one column per finding: 1, 0, -1 or blank). A progress bar goes to stderr; report text is
never logged.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medvl.cli.common import CONFIG_OPTION, OVERRIDES_ARGUMENT, exit_on_error, job_config


def label_command(
    reports: Path = typer.Argument(..., help="A CSV of reports, or a folder of .txt/.xml files."),
    out: Path = typer.Option(..., "--out", "-o", help="The labels CSV to write."),
    sections: str | None = typer.Option(
        None,
        "--sections",
        help="Sections to label, comma-separated (default findings,impression;"
        " 'all' for the whole text).",
    ),  # fmt: skip
    text_column: str | None = typer.Option(None, "--text-column", help="CSV column of the text."),
    id_column: str | None = typer.Option(None, "--id-column", help="CSV column of report ids."),
    rules: Path | None = typer.Option(None, "--rules", help="Labeler rules YAML."),
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
) -> None:
    """Label every report in REPORTS with the CheXpert-14 findings into the --out CSV.

    Overrides: sections=[findings,impression], rules=FILE, text_column=NAME, id_column=NAME.
    """
    from medvl.io.labeler import LabelConfig, label_reports

    cfg = job_config(LabelConfig, config, overrides)
    if sections is not None:
        cfg.sections = tuple(s for s in sections.split(",") if s.strip())
    for key, value in (("rules", rules), ("text_column", text_column), ("id_column", id_column)):
        if value is not None:
            setattr(cfg, key, str(value))
    with exit_on_error():
        run = label_reports(
            reports,
            out,
            sections=cfg.sections,
            rules=cfg.rules,
            text_column=cfg.text_column,
            id_column=cfg.id_column,
            progress=True,
        )
    typer.echo(f"{run.reports} reports labelled: {run.out}")


def register(app: typer.Typer) -> None:
    """Attach ``label`` to the main app."""
    app.command("label")(label_command)
