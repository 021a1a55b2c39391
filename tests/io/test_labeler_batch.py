"""``label_reports`` / ``read_report_table``: CSV and folder inputs, the output CSV, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import medvl
from medvl.config import ConfigError
from medvl.findings import CHEXPERT_14
from medvl.io.labeler import label_reports, read_report_table

OPEN_I_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR1"/><MedlineCitation><Article><Abstract>
<AbstractText Label="INDICATION">rule out pneumonia</AbstractText>
<AbstractText Label="FINDINGS">Small right pleural effusion.</AbstractText>
<AbstractText Label="IMPRESSION">No pneumothorax.</AbstractText>
</Abstract></Article></MedlineCitation></eCitation>
"""


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_with_header_id_column_and_bom(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        '\ufeffAccession,Report_Text\nA1,FINDINGS: Cardiomegaly.\nA2,"No effusion, no edema."\n'
    )
    assert read_report_table(source, text_column="report_text", id_column="accession") == [
        ("A1", "FINDINGS: Cardiomegaly."),
        ("A2", "No effusion, no edema."),
    ]
    run = label_reports(source, tmp_path / "out" / "labels.csv", id_column="Accession")
    assert run.reports == 2 and run.out.is_file()
    first, second = rows(run.out)
    assert list(first) == ["report_id", *CHEXPERT_14]
    assert (first["report_id"], first["Cardiomegaly"], first["No Finding"]) == ("A1", "1", "0")
    assert (second["Pleural Effusion"], second["Edema"], second["No Finding"]) == ("0", "0", "1")


def test_headerless_and_named_single_column(tmp_path: Path) -> None:
    headerless = tmp_path / "a.csv"
    headerless.write_text("No pneumothorax.\n\nPossible pneumonia.\n")
    assert read_report_table(headerless) == [
        ("1", "No pneumothorax."),
        ("2", ""),
        ("3", "Possible pneumonia."),
    ]
    named = tmp_path / "b.csv"
    named.write_text("Reports\nNo pneumothorax.\n")
    assert read_report_table(named) == [("1", "No pneumothorax.")]
    empty = tmp_path / "c.csv"
    empty.write_text("")
    assert read_report_table(empty) == []


def test_folder_of_text_and_open_i_xml(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "r2.txt").write_text("IMPRESSION: Left lower lobe pneumonia.")
    (tmp_path / "a.xml").write_text(OPEN_I_XML)
    (tmp_path / "notes.md").write_text("not a report")
    run = label_reports(tmp_path, tmp_path / "labels.csv")
    xml_row, txt_row = rows(run.out)
    assert (xml_row["report_id"], txt_row["report_id"]) == ("a.xml", "b/r2.txt")
    # the XML's indication ("rule out pneumonia") is not read; its findings and impression are
    assert (xml_row["Pleural Effusion"], xml_row["Pneumothorax"], xml_row["Pneumonia"]) == (
        "1",
        "0",
        "",
    )
    assert txt_row["Pneumonia"] == "1"
    whole = label_reports(tmp_path, tmp_path / "all.csv", sections=["all"])
    assert rows(whole.out)[0]["Pneumonia"] == "-1"


@pytest.mark.parametrize(
    ("content", "kwargs", "error", "message"),
    [
        ("id,body\n1,x\n", {}, ConfigError, "no report text column"),
        ("id,text\n1,x\n", {"id_column": "study"}, ConfigError, "no column 'study'"),
        ("id,text\n1\n", {}, ValueError, "row 2 has 1 cells"),
        (b"text\n\xff\xfe\n", {}, ValueError, "not a UTF-8 text CSV"),
    ],
)
def test_bad_csv_is_named(tmp_path: Path, content, kwargs, error, message) -> None:
    source = tmp_path / "in.csv"
    if isinstance(content, bytes):
        source.write_bytes(content)
    else:
        source.write_text(content)
    with pytest.raises(error, match=message) as info:
        read_report_table(source, **kwargs)
    assert str(source) in str(info.value)


def test_bad_sections_and_missing_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="history"):
        label_reports(tmp_path, tmp_path / "l.csv", sections=["findings", "history"])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        label_reports(tmp_path / "nope.csv", tmp_path / "l.csv")


def test_public_face() -> None:
    assert medvl.label_reports is label_reports
