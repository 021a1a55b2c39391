"""Label many reports at once: a CSV or a folder in, the CheXpert labeler's CSV out.

Input, as the CheXpert labeler and the usual exports hold reports:

* a CSV file: headerless with one report per row (the CheXpert labeler's input), or with a
  header and the report text in ``text_column`` (found by name when not given: ``Reports``,
  ``report``, ``report_text``, ``text``); ``id_column`` names each row, else its 1-based row
  number does;
* a folder: every ``*.txt`` file (one report each) and every Open-i report ``*.xml`` below it,
  named by its path relative to the folder.

Output: one row per report, ``report_id`` then the CheXpert-14 columns in CheXpert's order, each
``1`` (present), ``0`` (negated), ``-1`` (uncertain) or blank (not mentioned). Report text is
never logged nor written out; error messages name the file, row and column, never the text.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from medvl.config import ConfigError
from medvl.findings import CHEXPERT_14
from medvl.io.labeler.engine import LABELLED_SECTIONS, ReportLabeler, default_labeler
from medvl.io.reports import SECTION_NAMES, parse_iu_report

ID_COLUMN = "report_id"
TEXT_COLUMNS: tuple[str, ...] = ("reports", "report", "report_text", "text")
ALL_SECTIONS = "all"


@dataclass
class LabelConfig:
    """A ``medvl label`` job.

    ``sections``: the report sections labelled (``["all"]`` for the whole text); ``rules``: a
    labeler rules YAML (default: the packaged rules); ``text_column`` / ``id_column``: CSV
    columns of the report text and of its id.
    """

    sections: tuple[str, ...] = LABELLED_SECTIONS
    rules: str | None = None
    text_column: str | None = None
    id_column: str | None = None


@dataclass(frozen=True)
class LabelRun:
    """What :func:`label_reports` wrote: the CSV and how many reports it holds."""

    out: Path
    reports: int


def check_sections(sections: Sequence[str]) -> tuple[str, ...] | None:
    """Validated section names; ``None`` for ``["all"]`` (label the whole text)."""
    names = tuple(s.strip().lower() for s in sections if s.strip())
    if names == (ALL_SECTIONS,):
        return None
    unknown = [s for s in names if s not in SECTION_NAMES]
    if unknown or not names:
        raise ConfigError(
            f"sections: unknown {unknown or 'empty list'}; expected names among "
            f"{list(SECTION_NAMES)} or 'all'"
        )
    return names


def _csv_reports(
    path: Path, text_column: str | None, id_column: str | None
) -> Iterator[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        first = next(rows, None)
        if first is None:
            return
        header = [c.strip() for c in first]
        named = text_column is not None or id_column is not None
        if not named and len(header) == 1 and header[0].lower() not in TEXT_COLUMNS:
            # headerless, one report per row: the CheXpert labeler's input
            yield "1", first[0]
            yield from ((str(n), row[0] if row else "") for n, row in enumerate(rows, 2))
            return
        text_at = _column(path, header, text_column, TEXT_COLUMNS, "text_column")
        id_at = None if id_column is None else _column(path, header, id_column, (), "id_column")
        for n, row in enumerate(rows, 1):
            if len(row) <= max(text_at, id_at or 0):
                raise ValueError(f"{path}: row {n + 1} has {len(row)} cells, fewer than the header")
            yield (str(n) if id_at is None else row[id_at]), row[text_at]


def _column(
    path: Path, header: list[str], name: str | None, defaults: tuple[str, ...], key: str
) -> int:
    lowered = [c.lower() for c in header]
    wanted = (name.lower(),) if name else defaults
    for candidate in wanted:
        if candidate in lowered:
            return lowered.index(candidate)
    # the header's cells are not echoed: in a headerless file they are report data
    hint = f"no column {name!r}" if name else f"no report text column ({', '.join(defaults)})"
    raise ConfigError(f"{path}: {hint} among the {len(header)} header cells; set {key}")


def _folder_reports(root: Path) -> Iterator[tuple[str, str]]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".txt", ".xml"))
    for path in files:
        name = path.relative_to(root).as_posix()
        if path.suffix.lower() == ".txt":
            yield name, path.read_text(encoding="utf-8", errors="replace")
            continue
        try:
            sections = parse_iu_report(path.read_bytes()).sections
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        yield name, "\n".join(f"{section}: {text}" for section, text in sections.items())


def read_report_table(
    source: str | Path, text_column: str | None = None, id_column: str | None = None
) -> list[tuple[str, str]]:
    """``(report id, report text)`` pairs from a CSV file or a folder (see the module doc).

    Raises
    ------
    FileNotFoundError
        When ``source`` does not exist.
    ConfigError
        When a CSV has no column for the text (or the named id column).
    """
    source = Path(source)
    if source.is_dir():
        return list(_folder_reports(source))
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file or folder of reports")
    try:
        return list(_csv_reports(source, text_column, id_column))
    except UnicodeDecodeError:
        raise ValueError(f"{source}: not a UTF-8 text CSV") from None
    except csv.Error as err:
        raise ValueError(f"{source}: unreadable CSV ({err})") from None


def _cell(value: int | None) -> str:
    return "" if value is None else str(value)


def label_reports(
    source: str | Path,
    out: str | Path,
    *,
    sections: Sequence[str] = LABELLED_SECTIONS,
    rules: str | Path | None = None,
    text_column: str | None = None,
    id_column: str | None = None,
    progress: bool = False,
) -> LabelRun:
    """Label every report of a CSV file or folder and write the CheXpert labeler's CSV.

    Parameters
    ----------
    source
        A CSV of reports or a folder of ``.txt`` / Open-i ``.xml`` reports (see the module doc).
    out
        The labels CSV to write (its folder is created).
    sections
        Sections to label, as :meth:`ReportLabeler.label` reads them; ``["all"]`` labels the
        whole text.
    rules
        A labeler rules YAML; the packaged rules by default.
    text_column, id_column
        CSV columns of the report text and of the report id.
    progress
        Show a tqdm progress bar on stderr (the CLI turns it on).
    """
    from tqdm.auto import tqdm

    chosen = check_sections(sections)
    labeler = ReportLabeler.from_yaml(rules) if rules else default_labeler()
    reports = read_report_table(source, text_column, id_column)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([ID_COLUMN, *CHEXPERT_14])
        bar = tqdm(reports, unit="report", desc="label", disable=not progress, file=sys.stderr)
        for report_id, text in bar:
            labels = labeler.label(text, sections=chosen)
            writer.writerow([report_id, *(_cell(labels[f]) for f in CHEXPERT_14)])
    return LabelRun(out=out, reports=len(reports))
