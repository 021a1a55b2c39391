"""Domain-adaptive pretraining: chained ``mlm`` and ``contrastive`` stages on one aligner.

``medvl pretrain --config configs/dapt_phantom.yaml [key=value ...]`` runs
:func:`pretrain`. Each stage trains in ``<output_dir>/<NN>-<name>/`` (engine checkpoints,
metrics, TensorBoard) and saves the aligner it produced to ``<NN>-<name>/model``; the next
stage starts from it, and ``<output_dir>/model`` holds the final aligner. A stage whose
``model`` folder exists is complete and is skipped on a re-run, while an interrupted stage
resumes from its newest checkpoint, so re-running the same command after a crash continues
the job. ``<output_dir>/config.yaml`` is the resolved config and ``pretrain_summary.json``
the numbers of every stage (held-out MLM loss, retrieval and zero-shot AUROC before/after).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvl.config import save_config
from medvl.eval.metrics import nan_to_none
from medvl.train.pretrain.stages import StageConfig

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """A pretraining job: the starting aligner, where to write, and the stages in order."""

    model: str = "tiny-minilm"  # aligner preset or saved aligner directory
    output_dir: Path = Path("runs/dapt")
    seed: int = 0  # seeds model construction; stages seed their own training
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(kind="mlm")])

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        names = [s.name for s in self.stages]
        if not names:
            raise ValueError("a pretraining job needs at least one stage")
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")


def stage_dir(config: PretrainConfig, index: int) -> Path:
    """Folder of stage ``index`` (``01-mlm``, ``02-contrastive`` ...)."""
    return config.output_dir / f"{index + 1:02d}-{config.stages[index].name}"


def pretrain(config: PretrainConfig) -> dict[str, Any]:
    """Run (or finish) every stage of ``config``; returns the summary also written to disk."""
    import torch
    from accelerate import PartialState

    from medvl.models.aligner import MedVLAligner, create_aligner
    from medvl.train.pretrain.contrastive import run_contrastive_stage
    from medvl.train.pretrain.mlm import run_mlm_stage

    state = PartialState()
    main = state.is_main_process
    out = config.output_dir
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    torch.manual_seed(config.seed)
    aligner = create_aligner(config.model)
    summary: dict[str, Any] = {"model": config.model, "stages": []}
    for index, stage in enumerate(config.stages):
        folder = stage_dir(config, index)
        saved = folder / "model"
        if (saved / "config.json").is_file():
            logger.info("stage %s already complete; loading %s", stage.name, saved)
            aligner = MedVLAligner.from_pretrained(saved)
            previous = folder / "stage_summary.json"
            if previous.is_file():
                summary["stages"].append(json.loads(previous.read_text()))
            continue
        train = dataclasses.replace(stage.train, output_dir=folder)
        started = time.perf_counter()
        logger.info("stage %d/%d: %s (%s)", index + 1, len(config.stages), stage.name, stage.kind)
        runner = run_mlm_stage if stage.kind == "mlm" else run_contrastive_stage
        numbers = runner(aligner, stage, train)
        record = {"name": stage.name, "kind": stage.kind, **numbers}
        record["stage_wall_time_s"] = time.perf_counter() - started
        if main:
            aligner.save_pretrained(saved)
            (folder / "stage_summary.json").write_text(json.dumps(nan_to_none(record), indent=2))
        state.wait_for_everyone()
        summary["stages"].append(record)
    summary["final_model"] = str(out / "model")
    if main:
        aligner.save_pretrained(out / "model")
        (out / "pretrain_summary.json").write_text(json.dumps(nan_to_none(summary), indent=2))
    state.wait_for_everyone()
    return summary
