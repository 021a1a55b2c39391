"""``medvl segment`` takes a raw SAM/MedSAM checkpoint (DDP-prefixed here) as ``--model``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from medvl.cli import app
from medvl.models.sam import SamConfig
from medvl.models.sam.model import SamModel

runner = CliRunner()


def test_segment_with_a_ddp_medsam_checkpoint(tmp_path: Path) -> None:
    state = SamModel(SamConfig(variant="tiny", img_size=64)).state_dict()
    checkpoint = tmp_path / "medsam_tiny.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, checkpoint)
    image = tmp_path / "image.npy"
    np.save(image, np.random.default_rng(0).random((48, 40)).astype(np.float32))
    args = ["segment", "--model", str(checkpoint), "--image", str(image), "--box", "5,5,30,40"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out"), "--device", "cpu",
                                 "--preprocessing", "medsam"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "out" / "mask.npy").shape == (48, 40)
    assert json.loads((tmp_path / "out" / "result.json").read_text())["area_px"] >= 0
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "o2"), "--preprocessing", "clahe"])
    assert bad.exit_code == 2 and "'clahe' is not one of ['sam', 'medsam']" in bad.output
    assert "Traceback" not in bad.output
