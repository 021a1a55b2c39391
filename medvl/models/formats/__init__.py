"""Other libraries' model files, in and out: one module per library.

:func:`detect_format` tells what a folder holds; :func:`load_foreign_aligner` turns a
transformers CLIP/SigLIP directory into a :class:`~medvl.models.aligner.MedVLAligner` whose
outputs equal the source library's.
"""

from __future__ import annotations

from medvl.models.formats.detect import FOREIGN_FORMATS, detect_format, load_foreign_aligner

__all__ = ["FOREIGN_FORMATS", "detect_format", "load_foreign_aligner"]
