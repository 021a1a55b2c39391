"""Phantom chest radiographs paired with real reports: the embedded default image-report data.

A generator, not a dataset adapter: :func:`generate_phantoms` (in :mod:`.generate`) plans each
study from a real report (:mod:`.plan`), builds anatomy from real lung annotations
(:mod:`.anatomy`, :mod:`.shapes`), draws findings and devices (:mod:`.draw`, :mod:`.stamps`,
:mod:`.devices`), renders frontal and lateral views (:mod:`.render`, :mod:`.lateral`) and
writes real DICOM (:mod:`.dicom`). Jobs describe the phantoms they want with one
:class:`PhantomConfig` (:mod:`.config`) and call :func:`ensure_phantoms` (:mod:`.ensure`), which
regenerates a folder only when its recorded config hash differs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medvl.data.phantom.config import PhantomConfig, phantom_hash
    from medvl.data.phantom.ensure import ensure_phantoms, recorded_hash
    from medvl.data.phantom.generate import (
        INFO_FILE,
        SEG_MANIFEST,
        SOURCE,
        STUDIES_MANIFEST,
        TRUTH_FILE,
        generate_phantoms,
        load_truth,
    )

# the renderer pulls in scipy and pydicom: job configs import PhantomConfig without them
_HOMES = {
    "PhantomConfig": "config",
    "phantom_hash": "config",
    "ensure_phantoms": "ensure",
    "recorded_hash": "ensure",
    **dict.fromkeys(
        ("INFO_FILE", "SEG_MANIFEST", "SOURCE", "STUDIES_MANIFEST", "TRUTH_FILE",
         "generate_phantoms", "load_truth"),
        "generate",
    ),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = [
    "INFO_FILE",
    "SEG_MANIFEST",
    "SOURCE",
    "STUDIES_MANIFEST",
    "TRUTH_FILE",
    "PhantomConfig",
    "ensure_phantoms",
    "generate_phantoms",
    "load_truth",
    "phantom_hash",
    "recorded_hash",
]
