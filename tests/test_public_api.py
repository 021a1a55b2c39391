"""The public face: every name in ``medvl.__all__`` resolves, and its example runs as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

import medvl

README = Path(__file__).resolve().parents[1] / "README.md"


def docstring_example() -> str:
    """The code block that closes the ``medvl`` module docstring."""
    return textwrap.dedent(medvl.__doc__.split("::\n", 1)[1]).strip()


def test_every_face_name_resolves() -> None:
    missing = []
    for name in medvl.__all__:
        try:
            getattr(medvl, name)
        except (AttributeError, ImportError) as err:
            missing.append(f"{name}: {err}")
    assert not missing, "face names that do not resolve:\n" + "\n".join(missing)


def test_dir_lists_the_face() -> None:
    assert set(medvl.__all__) <= set(dir(medvl))


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'load_everything'"):
        medvl.load_everything  # noqa: B018


def test_readme_shows_the_docstring_example() -> None:
    section = README.read_text(encoding="utf-8").split("## Public API", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README's Public API section has no python block"
    assert block.group(1).strip() == docstring_example()


@pytest.mark.slow
def test_docstring_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(docstring_example(), "medvl-example", "exec"), namespace)
    assert tuple(namespace["probs"].shape) == (1, len(namespace["scorer"].findings))
