"""The same job gives the same numbers whether the SAM embedding cache was empty or full."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvl.config import from_dict
from medvl.models.sam import SamConfig, build_sam
from medvl.models.sam.cache import ArrayImageSource, encode_images, open_cache
from medvl.train.engine.run_log import read_metrics


def test_filling_the_cache_leaves_the_global_random_stream_alone(tmp_path):
    model = build_sam(SamConfig(variant="tiny", img_size=64))
    rng = np.random.default_rng(0)
    source = ArrayImageSource([rng.random((48, 64), dtype=np.float32) for _ in range(3)])
    torch.manual_seed(5)
    before = torch.get_rng_state()
    filled = encode_images(model, source, open_cache(model, source, tmp_path), batch_size=2)
    assert filled.computed == 3
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow
def test_segment_finetune_is_the_same_with_an_empty_or_a_full_cache(tmp_path):
    from medvl.data.phantom import generate_phantoms
    from medvl.train.segment import SegmentConfig, run_segment_finetune

    manifest = generate_phantoms(16, tmp_path / "ph", seed=2, size=64, workers=1, progress=False)

    def run(name: str):
        config = from_dict(SegmentConfig, {
            "output_dir": str(tmp_path / name),
            "model": {"variant": "tiny", "img_size": 64},
            "data": {"source": "manifest", "path": str(manifest), "structures": ["lungs"]},
            "cache": {"dir": str(tmp_path / "cache")},
            "eval": {"overlays": 0},
            "train": {"max_steps": 4, "batch_size": 4, "lr": 3e-3, "eval_every": 0,
                      "cpu": True, "progress": False, "tensorboard": False, "log_every": 1},
        })  # fmt: skip
        result = run_segment_finetune(config)
        rows = read_metrics(tmp_path / name / "train")
        return result, [r["train/loss"] for r in rows if "train/loss" in r]

    empty, empty_losses = run("empty_cache")
    full, full_losses = run("full_cache")
    assert empty.encoded > 0 and full.encoded == 0  # the second run found every embedding
    assert len(empty_losses) == 4 and full_losses == empty_losses
    assert full.metrics["val"]["all"]["dice_mean"] == empty.metrics["val"]["all"]["dice_mean"]
