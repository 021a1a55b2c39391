"""Report corpora for MLM: folders, manifests and the real IU reports, split stably."""

from __future__ import annotations

import pytest

from medvl.data.records import Study, write_manifest
from medvl.data.report_corpus import load_report_corpus, split_corpus

REPORTS = [
    "The cardiomediastinal silhouette is within normal limits. No focal consolidation.",
    "Stable mild cardiomegaly. Trace left pleural effusion.",
    "Patchy left basilar opacity, atelectasis or early pneumonia.",
    "Postoperative XXXX changes of the sternum. Lungs are clear.",
    "Tiny right apical pneumothorax, unchanged.",
    "Interstitial edema and small bilateral effusions.",
]


def test_corpus_from_a_folder_and_from_a_manifest(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    for i, text in enumerate(REPORTS):
        (folder / f"r{i}.txt").write_text(text)
    texts = load_report_corpus(folder)
    assert len(texts) == 6
    assert "XXXX" not in " ".join(texts)  # de-identification tokens cleaned as for the aligner

    studies = [
        Study(
            study_id=f"s{i}",
            patient_key=f"p{i}",
            source="test",
            report_text=t,
            split="test" if i == 0 else "train",
        )
        for i, t in enumerate(REPORTS)
    ]
    manifest = write_manifest(tmp_path / "studies.jsonl", studies)
    assert len(load_report_corpus(manifest)) == 6
    assert len(load_report_corpus(manifest, exclude_splits=("test",))) == 5
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_report_corpus(tmp_path / "nowhere")


def test_iu_corpus_is_the_real_reports_without_test_split():
    texts = load_report_corpus("iu", exclude_splits=("test",))
    assert 3000 < len(texts) < 3955
    train, val = split_corpus(texts, 0.05)
    assert len(val) == pytest.approx(0.05 * len(texts), rel=0.3)
    assert split_corpus(texts, 0.05) == (train, val)
