"""The public face: every name in ``medvl.__all__`` resolves, and its example runs as written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import medvl


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


def test_readme_shows_the_docstring_example(readme_code) -> None:
    assert readme_code("## Public API", "python").strip() == docstring_example()


@pytest.mark.slow
def test_docstring_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(docstring_example(), "medvl-example", "exec"), namespace)
    assert tuple(namespace["probs"].shape) == (1, len(namespace["scorer"].findings))
