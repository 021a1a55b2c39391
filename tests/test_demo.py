"""``make demo SIZE=small`` end to end: every step runs and its numbers are sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvl.config import load_config
from medvl.demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow
SMALL = Path(__file__).resolve().parents[1] / "configs" / "demo_small.yaml"


def test_small_demo_adapts_and_segments(tmp_path: Path, readme_code) -> None:
    config = load_config(DemoConfig, SMALL, [f"output_dir={tmp_path / 'demo'}"])
    summary = run_demo(config)
    rows = summary["rows"]
    before = rows["zero-shot macro AUROC, base (general-domain text)"]
    after = rows["zero-shot macro AUROC, after DAPT"]
    assert after > before, (before, after)
    dice_before = rows["SAM lungs Dice before fine-tuning"]
    assert rows["SAM lungs Dice after fine-tuning"] > dice_before + 0.2
    assert rows["LoRA trainable parameters"] > 0
    assert summary["ingest"]["failures"] == 0 and summary["ingest"]["images"] > 0
    out = tmp_path / "demo"
    assert (out / "summary.md").read_text().startswith("# medvl demo summary")
    results = sorted((out / "infer" / "output").glob("*/result.json"))
    assert len(results) == config.infer_studies
    assert all(json.loads(p.read_text())["images"] for p in results)
    assert list((out / "infer" / "output").glob("*/findings_sr.dcm"))
    assert list((out / "infer" / "output").glob("*/seg_*.dcm"))
    quickstart = readme_code("### Clinical research", "python")
    readme_quickstart_runs_on(quickstart, out)


def readme_quickstart_runs_on(code: str, out: Path) -> None:
    """The README's notebook quickstart, as written, on this demo's outputs (not runs/demo)."""
    assert "runs/demo/" in code
    namespace: dict = {}
    exec(code.replace("runs/demo/", f"{out}/"), namespace)  # the README's own code
    assert tuple(namespace["probs"].shape) == (1, 14)
    finding_probs = namespace["finding_probs"]
    assert tuple(finding_probs.shape) == (1, len(namespace["classifier"].findings))
    assert bool(((finding_probs >= 0) & (finding_probs <= 1)).all())
