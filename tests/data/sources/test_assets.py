"""Locating torchxrayvision's data files without importing torchxrayvision."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medvl.data.sources import assets
from medvl.data.sources.assets import IU_REPORTS, AssetNotFoundError, asset_path


def test_found_in_package_without_importing_it() -> None:
    code = (
        "import sys\n"
        "from medvl.data.sources.assets import asset_path, IU_REPORTS, SIIM_RLE\n"
        "print(asset_path(IU_REPORTS).stat().st_size, asset_path(SIIM_RLE).name)\n"
        "assert 'torchxrayvision' not in sys.modules\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    size, name = out.stdout.split()
    assert int(size) > 1_000_000 and name == "siim-pneumothorax-train-rle.csv.gz"


def test_metadata_fallback_finds_the_same_folder(monkeypatch) -> None:
    expected = assets.package_data_dir()
    monkeypatch.setattr(assets, "_package_dir_from_spec", lambda: None)
    assert assets.package_data_dir() == expected


def test_override_and_environment(tmp_path, monkeypatch) -> None:
    mine = tmp_path / "reports.tgz"
    mine.write_bytes(b"x")
    assert asset_path(IU_REPORTS, mine) == mine
    with pytest.raises(AssetNotFoundError, match="missing.tgz"):
        asset_path(IU_REPORTS, tmp_path / "missing.tgz")
    (tmp_path / IU_REPORTS).write_bytes(b"y")
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(tmp_path))
    assert asset_path(IU_REPORTS) == tmp_path / IU_REPORTS


def test_absent_package_message(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(assets, "package_data_dir", lambda: None)
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(tmp_path))
    with pytest.raises(AssetNotFoundError) as err:
        asset_path(IU_REPORTS)
    message = str(err.value)
    assert "pip install torchxrayvision" in message and str(tmp_path) in message
