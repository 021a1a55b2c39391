"""``ensure_phantoms``: reuse a folder while its recorded hash matches, else regenerate cleanly."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from medvl.data.phantom import INFO_FILE, PhantomConfig, ensure_phantoms, phantom_hash
from medvl.data.phantom import recorded_hash as read_hash
from medvl.data.records import Study, read_manifest


def test_reuse_while_the_hash_matches_then_regenerate_without_leftovers(tmp_path, caplog) -> None:
    folder = tmp_path / "phantoms"
    assert read_hash(folder) is None
    config = PhantomConfig(n_studies=2, size=64, workers=1)
    manifest = ensure_phantoms(config, folder)
    info = json.loads((folder / INFO_FILE).read_text())
    assert info["config_hash"] == phantom_hash(config) == read_hash(folder)
    images = sorted((folder / "images").rglob("*.dcm"))
    stamps = [p.stat().st_mtime_ns for p in (manifest, *images)]

    with caplog.at_level(logging.INFO, logger="medvl.data.phantom.ensure"):
        again = ensure_phantoms(PhantomConfig(n_studies=2, size=64, workers=3), folder)
    assert again == manifest and "reusing the phantoms" in caplog.text  # workers: same bytes
    assert [p.stat().st_mtime_ns for p in (manifest, *images)] == stamps

    fewer = PhantomConfig(n_studies=1, size=64, workers=1)
    ensure_phantoms(fewer, folder)
    assert read_hash(folder) == phantom_hash(fewer)
    [study] = read_manifest(manifest, Study)
    on_disk = {p.resolve() for p in (folder / "images").rglob("*.dcm")}
    assert on_disk == {Path(image.path).resolve() for image in study.images}  # nothing stale
