"""``medvl label``: the README's commands as written, the CSV format, errors, no report text out."""

from __future__ import annotations

import csv
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medvl.cli import app
from medvl.findings import CHEXPERT_14

# Words that appear only in the report text; none may reach stdout, stderr or the labels CSV.
SECRET = "Zanzibarsky"
REPORTS = [
    (
        "s1",
        f"INDICATION: {SECRET} cough.\nFINDINGS: Mild cardiomegaly. No pleural effusion.\n"
        "IMPRESSION: No acute disease.",
    ),
    ("s2", "IMPRESSION: Possible right lower lobe pneumonia. Sternotomy wires."),
    ("s3", "FINDINGS: The lungs are clear. Heart size upper limits of normal."),
]


def write_inputs(root: Path) -> None:
    with (root / "reports.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study", "text"])
        writer.writerows(REPORTS)
    folder = root / "reports" / "nested"
    folder.mkdir(parents=True)
    for study, text in REPORTS:
        (folder / f"{study}.txt").write_text(text)


def read_labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def invoke(argv: list[str]):
    return CliRunner().invoke(app, argv)


def test_readme_commands_run_as_written(
    readme_code: Callable[[str, str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    lines = [
        ln.split("  #", 1)[0] for ln in readme_code("### Labelling reports", "bash").splitlines()
    ]
    commands = [shlex.split(ln)[1:] for ln in lines if ln.strip()]
    assert len(commands) == 3
    for argv in commands:
        result = invoke(argv)
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
    first, folder, whole = (read_labels(tmp_path / p) for p in
                            ("labels.csv", "labels/folder.csv", "labels/all.csv"))  # fmt: skip
    assert [r["report_id"] for r in first] == ["1", "2", "3"]
    assert [r["report_id"] for r in folder] == ["nested/s1.txt", "nested/s2.txt", "nested/s3.txt"]
    assert [r["report_id"] for r in whole] == ["s1", "s2", "s3"]
    for rows in (first, folder):
        s1, s2, s3 = rows
        assert (s1["Cardiomegaly"], s1["Pleural Effusion"], s1["No Finding"]) == ("1", "0", "0")
        assert (s2["Pneumonia"], s2["Support Devices"], s2["Fracture"]) == ("-1", "", "")
        assert (s3["Cardiomegaly"], s3["Lung Opacity"], s3["No Finding"]) == ("0", "0", "1")
    # "all" reads the indication too: "cough" names no finding, so the labels are the same
    assert whole[0]["Cardiomegaly"] == "1"


def test_readme_config_reference_row_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    row = re.search(r"^\| `medvl label` \|.*\| `(medvl label [^`]+)` \|$", readme, re.M)
    assert row, "README config reference has no medvl label row"
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = invoke(shlex.split(row.group(1))[1:])
    assert result.exit_code == 0, result.output
    s1, s2, _ = read_labels(tmp_path / "labels.csv")
    assert s1["Cardiomegaly"] == "" and s1["No Finding"] == "1"  # its impression only
    assert s2["Pneumonia"] == "-1"


def test_output_is_the_chexpert_format(tmp_path: Path) -> None:
    source = tmp_path / "chexpert_input.csv"
    source.write_text('"No pneumothorax."\n"Small left pleural effusion, possible atelectasis."\n')
    out = tmp_path / "out.csv"
    result = invoke(["label", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    header, *rows = list(csv.reader(out.open()))
    assert header == ["report_id", *CHEXPERT_14]
    assert [r[0] for r in rows] == ["1", "2"]  # headerless: every row is a report
    values = {v for r in rows for v in r[1:]}
    assert values <= {"1", "0", "-1", ""}
    assert rows[0][CHEXPERT_14.index("Pneumothorax") + 1] == "0"
    assert rows[1][CHEXPERT_14.index("Atelectasis") + 1] == "-1"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--sections", "findings,history"], 2, "unknown ['history']"),
        (["--text-column", "body"], 2, "no column 'body'"),
        (["sections=[impresion]"], 2, "impresion"),
        (["--rules", "missing_rules.yaml"], 2, "missing_rules.yaml"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], code: int, message: str
) -> None:
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = invoke(["label", "reports.csv", "--out", "labels.csv", *argv])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert SECRET not in result.output


def test_missing_input_exits_1(tmp_path: Path) -> None:
    result = invoke(["label", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "l.csv")])
    assert result.exit_code == 1
    assert "nope.csv" in result.output and len(result.output.strip().splitlines()) == 1


def test_headerless_multi_column_error_does_not_echo_the_row(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_text(f"12345,{SECRET} has a small effusion\n")
    result = invoke(["label", str(source), "--out", str(tmp_path / "l.csv")])
    assert result.exit_code == 2
    assert "text_column" in result.output
    assert SECRET not in result.output and "12345" not in result.output
