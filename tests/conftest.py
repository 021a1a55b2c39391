"""Fixtures shared by every test folder: the README's code blocks, read the way users read them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_code_block(heading: str, language: str) -> str:
    """The first ``language`` code block of the README section that starts at ``heading``.

    The block must belong to that section: no other heading may stand between the two.
    """
    text = README.read_text(encoding="utf-8")
    assert heading in text, f"README has no section {heading!r}"
    section = text.split(heading, 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"README section {heading!r} has no {language} block"
    between = section[: match.start()]
    assert not re.search(r"^#{1,6} ", between, re.M), f"no {language} block in {heading!r}"
    return match.group(1)


@pytest.fixture
def readme_code() -> Callable[[str, str], str]:
    """:func:`readme_code_block`, for tests that run or parse the README's examples."""
    return readme_code_block
