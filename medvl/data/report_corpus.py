"""Report text corpora for masked-language-model pretraining of the text tower.

:func:`load_report_corpus` reads ``"iu"`` (the 3,955 real Indiana University reports shipped
with torchxrayvision), a folder of ``.txt`` reports (one report per file), or a manifest of
Study or ImageReportPair records. Texts go through :func:`medvl.io.reports.clean_model_text`,
the same cleaning the aligner sees. :func:`split_corpus` holds out a stable validation share;
:class:`TokenizedReports` tokenizes once for the MLM collator.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from medvl.io.reports import clean_model_text


def _manifest_texts(path: Path, exclude_splits: Sequence[str]) -> list[str]:
    """Report texts of a Study or ImageReportPair manifest, one per study."""
    from medvl.data.records import ImageReportPair, Study, read_manifest

    first = next((line for line in path.read_text().splitlines() if line.strip()), "")
    if not first:
        raise ValueError(f"{path}: manifest is empty")
    cls: type = Study if "report_text" in json.loads(first) else ImageReportPair
    texts: dict[str, str] = {}
    for record in read_manifest(path, cls):
        if record.split in exclude_splits:
            continue
        text = record.model_text if isinstance(record, Study) else record.text
        texts.setdefault(record.study_id, text)
    return list(texts.values())


def load_report_corpus(source: str | Path = "iu", exclude_splits: Sequence[str] = ()) -> list[str]:
    """Cleaned report texts for MLM from ``"iu"``, a folder of ``.txt`` files or a manifest.

    ``exclude_splits`` drops studies of those splits (e.g. ``("test",)``, so a held-out test
    set's reports are never seen in pretraining); folders of text files have no splits.
    """
    if str(source) == "iu":
        from medvl.data.sources.iu.xray import load_iu_studies

        raw = [s.model_text for s in load_iu_studies() if s.split not in exclude_splits]
    else:
        path = Path(source)
        if path.is_dir():
            files = sorted(path.rglob("*.txt"))
            if not files:
                raise FileNotFoundError(f"{path}: no .txt reports in this folder")
            raw = [f.read_text(errors="replace") for f in files]
        elif path.is_file():
            raw = _manifest_texts(path, exclude_splits)
        else:
            raise FileNotFoundError(
                f"{path}: report corpus not found (expected 'iu', a folder or a manifest)"
            )
    texts = [t for t in (clean_model_text(r) for r in raw) if t]
    if not texts:
        raise ValueError(f"report corpus {source}: no non-empty report text")
    return texts


def split_corpus(texts: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split by a hash of each text (stable across runs)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    train, val = [], []
    for text in texts:
        bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (val if bucket < val_fraction else train).append(text)
    return train, val


class TokenizedReports(Dataset):
    """Reports tokenized once (truncated to ``max_length``); items are ``{"input_ids": [...]}``."""

    def __init__(self, texts: Sequence[str], tokenizer: Any, max_length: int) -> None:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.input_ids: list[list[int]] = encoded["input_ids"]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids[i]}
