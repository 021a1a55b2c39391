"""The user notebooks: committed without outputs, and each runs top to bottom in its small setting.

Every notebook's first code cell reads ``MEDVL_NB_SMALL=1`` (tiny models, a few phantom studies,
a few steps) and writes under ``MEDVL_NB_OUT``; the run here uses a fresh temporary folder as
both the output folder and the kernel's working directory, so nothing lands in the repository.
The kernel is ``python3`` as resolved by jupyter_client, i.e. the interpreter running pytest
(the project's virtualenv), so the notebooks import the same ``medvl`` as the tests.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = (
    "01_dicom_and_reports.ipynb",
    "02_zero_shot_findings.ipynb",
    "03_dapt_and_lora.ipynb",
    "04_sam_decoder_finetuning.ipynb",
    "05_pacs_inference.ipynb",
    "06_real_ct.ipynb",
)
CELL_TIMEOUT_S = 600


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_every_expected_notebook_is_there() -> None:
    names = [p.name for p in _notebooks()]
    assert names == sorted(EXPECTED), f"notebooks/ holds {names}"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = _read(path)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name} cell {index} has outputs; strip them"
        assert cell.get("execution_count") is None, f"{path.name} cell {index} has a count"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_first_code_cell_is_the_parameter_block(path: Path) -> None:
    notebook = _read(path)
    assert notebook.cells[0].cell_type == "markdown", "a notebook opens with its story"
    first = next(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "SMALL = " in first and "MEDVL_NB_SMALL" in first, f"{path.name}: no SMALL switch"
    assert "MEDVL_NB_OUT" in first, f"{path.name}: outputs must honour MEDVL_NB_OUT"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_imports_only_the_public_face(path: Path) -> None:
    """Notebooks import ``medvl`` itself, never its submodules: the face is the user's API."""
    import ast

    import medvl

    for index, cell in enumerate(_read(path).cells):
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medvl"):
                where = f"{path.name} cell {index}"
                assert node.module == "medvl", f"{where}: imports {node.module}"
                missing = [a.name for a in node.names if a.name not in medvl.__all__]
                assert not missing, f"{where}: {missing} are not in medvl.__all__"
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("medvl.")]
                assert not names, f"{path.name} cell {index}: imports {names}"


def _figures(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("MEDVL_NB_SMALL", "1")
    monkeypatch.setenv("MEDVL_NB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    notebook = _read(path)
    repo_files_before = set(NOTEBOOK_DIR.parent.glob("notebooks/**/*"))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    assert _figures(notebook) >= 1, f"{path.name} showed no figure"
    assert (tmp_path / "out" / path.stem).is_dir(), f"{path.name} wrote nothing under OUT"
    new_files = set(NOTEBOOK_DIR.parent.glob("notebooks/**/*")) - repo_files_before
    assert not new_files, f"{path.name} wrote into the repository: {sorted(new_files)[:3]}"
