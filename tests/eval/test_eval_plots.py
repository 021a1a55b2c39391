"""Plots write real PNG files."""

from __future__ import annotations

import numpy as np
from PIL import Image

from medvl.eval.plots import retrieval_examples_png, roc_curves_png, similarity_heatmap_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_width: int = 200) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.width >= min_width
        assert np.asarray(image.convert("L")).std() > 1  # not a blank canvas


def test_roc_curves_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 3)) < 0.5).astype(float)
    labels[:, 2] = 0.0  # one class only: listed, not drawn
    probs = np.clip(labels * 0.6 + rng.random((40, 3)) * 0.4, 0, 1)
    path = roc_curves_png(
        probs, labels, ["Edema", "Fracture", "Pneumothorax"], tmp_path / "roc.png"
    )
    _check_png(path)


def test_similarity_heatmap_png(tmp_path) -> None:
    similarity = np.eye(6) * 0.8 + 0.1
    path = similarity_heatmap_png(
        similarity,
        tmp_path / "sub" / "heat.png",
        row_names=list("abcdef"),
        col_names=list("abcdef"),
    )
    _check_png(path)


def test_retrieval_examples_png(tmp_path) -> None:
    rng = np.random.default_rng(1)
    images = rng.random((3, 1, 32, 32))
    texts = ["Normal chest.", "Right effusion.", "Cardiomegaly with edema.", "Pneumothorax."]
    similarity = rng.random((3, 4))
    path = retrieval_examples_png(
        similarity,
        images,
        texts,
        tmp_path / "examples.png",
        image_groups=["a", "b", "c"],
        text_groups=["a", "b", "c", "d"],
        k=2,
    )
    _check_png(path)


def test_retrieval_examples_draw_only_scrubbed_report_text(tmp_path, monkeypatch) -> None:
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    drawn: list[str] = []
    save = Figure.savefig

    def recording(fig, *args, **kwargs):
        drawn.extend(t.get_text() for t in fig.findobj(Text))
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    texts = ["No effusion. Reviewed for Jane Doe (MRN 7788990) on 03/04/2021 by Dr. Who."]
    retrieval_examples_png(np.ones((1, 1)), np.zeros((1, 1, 8, 8)), texts, tmp_path / "x.png")
    joined = "\n".join(drawn)
    assert "No effusion." in joined and "[NAME]" in joined
    for secret in ("Jane", "Doe", "7788990", "03/04/2021", "Who"):
        assert secret not in joined
