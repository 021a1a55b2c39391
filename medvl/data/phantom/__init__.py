"""Phantom chest radiographs paired with real reports: the embedded default image-report data.

A generator, not a dataset adapter: :func:`generate_phantoms` (in :mod:`.generate`) plans each
study from a real report (:mod:`.plan`), builds anatomy from real lung annotations
(:mod:`.anatomy`, :mod:`.shapes`), draws findings and devices (:mod:`.draw`, :mod:`.stamps`,
:mod:`.devices`), renders frontal and lateral views (:mod:`.render`, :mod:`.lateral`) and
writes real DICOM (:mod:`.dicom`).
"""

from medvl.data.phantom.generate import (
    INFO_FILE,
    SEG_MANIFEST,
    SOURCE,
    STUDIES_MANIFEST,
    TRUTH_FILE,
    PhantomConfig,
    generate_phantoms,
    load_truth,
)

__all__ = [
    "INFO_FILE",
    "SEG_MANIFEST",
    "SOURCE",
    "STUDIES_MANIFEST",
    "TRUTH_FILE",
    "PhantomConfig",
    "generate_phantoms",
    "load_truth",
]
