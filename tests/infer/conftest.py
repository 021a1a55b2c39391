"""Fixtures for inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from infer_dicom import make_cr
from pydicom.uid import generate_uid


@pytest.fixture
def cr_study(tmp_path: Path) -> list[Path]:
    """A study folder with a PA, an AP and a lateral CR image."""
    study_uid = generate_uid()
    folder = tmp_path / "study"
    folder.mkdir()
    paths = []
    for i, view in enumerate(("PA", "AP", "LL")):
        path = folder / f"img{i}.dcm"
        make_cr(path, study_uid=study_uid, view=view, seed=i)
        paths.append(path)
    return paths
