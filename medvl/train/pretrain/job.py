"""Domain-adaptive pretraining: chained ``mlm``, ``image_ssl`` and ``contrastive`` stages.

``medvl pretrain --config configs/dapt_phantom.yaml [key=value ...]`` runs
:func:`pretrain`. Each stage trains in ``<output_dir>/<NN>-<name>/`` (engine checkpoints,
metrics, TensorBoard: the job sets each stage's engine folder, so ``output_dir`` is the one
output key) and saves the aligner it produced to ``<NN>-<name>/model``; the next
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

from medvl.config import ConfigError, save_config, to_dict
from medvl.eval.metrics import nan_to_none
from medvl.train.engine.config import refuse_output_dir
from medvl.train.pretrain.stages import StageConfig

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """A pretraining job: the starting aligner, where to write, and the stages in order.

    The starting weights come from ``model`` plus the ``image`` and ``text`` sections, which
    patch the model's tower settings (``image.arch=resnet50 image.pretrained=/w/r50.pth
    text.name_or_path=/w/CXR-BERT`` on a preset; only non-architectural keys on a saved model).

    Engine settings live in each stage's ``train`` section; a top-level ``train`` section (in
    the YAML file or as ``train.lr=1e-4`` on the command line) sets its keys in every stage,
    over the stages' own values. ``stages.<index>.train.lr=5e-5`` (0-based) or
    ``stages.<name>.train.lr=5e-5`` (a stage's ``name``, by default its kind:
    ``stages.mlm.train.lr=5e-5``) sets one stage. Overrides apply left to right, so
    ``train.max_steps=10 stages.mlm.train.max_steps=5`` gives the MLM stage 5 steps and the
    others 10. Each stage's engine writes to its stage folder (:func:`stage_dir`): set
    ``output_dir``, never ``train.output_dir``.
    """

    model: str = (
        "tiny-minilm"  # preset, saved aligner, or another library's model (see create_aligner)
    )
    image: dict[str, Any] = field(default_factory=dict)  # ImageTowerConfig keys over the model's
    text: dict[str, Any] = field(default_factory=dict)  # TextTowerConfig keys over the model's
    output_dir: Path = Path("runs/dapt")
    seed: int = 0  # seeds model construction; stages seed their own training
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(kind="mlm")])

    def __post_init__(self) -> None:
        from medvl.models.towers import ImageTowerConfig, TextTowerConfig

        self.output_dir = Path(self.output_dir)
        for section, cls in (("image", ImageTowerConfig), ("text", TextTowerConfig)):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(getattr(self, section)) - known)
            if unknown:
                raise ValueError(
                    f"unknown config key {section}.{unknown[0]}; {cls.__name__} accepts: "
                    f"{sorted(known)}"
                )
        names = [s.name for s in self.stages]
        if not names:
            raise ValueError("a pretraining job needs at least one stage")
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for index, stage in enumerate(self.stages):
            refuse_output_dir(
                stage.train,
                f"stages.{stage.name}.train",
                f"<output_dir>/{index + 1:02d}-{stage.name}",
            )

    @classmethod
    def prepare_config(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Name every stage (default: its kind) and spread a shared ``train`` into each stage.

        Runs on the raw mapping before validation and after each override
        (:func:`medvl.config.from_dict`), so ``stages.<name>`` addresses a stage and
        ``train.<key>=...`` reaches every stage.
        """
        stages = data.get("stages")
        if stages is None:
            stages = data["stages"] = [to_dict(stage) for stage in cls().stages]
        if not isinstance(stages, list):
            return data  # validation names the wrong type
        for stage in stages:
            if isinstance(stage, dict) and not stage.get("name"):
                stage["name"] = stage.get("kind", StageConfig.kind)
        shared = data.pop("train", None)
        if shared is None:
            return data
        if not isinstance(shared, dict):
            raise ConfigError(f"train: expected a mapping of engine settings, got {shared!r}")
        for stage in stages:
            own = stage.get("train") if isinstance(stage, dict) else None
            if isinstance(stage, dict) and (own is None or isinstance(own, dict)):
                stage["train"] = {**(own or {}), **shared}
        return data


def starting_overrides(config: PretrainConfig) -> dict[str, Any]:
    """The ``image``/``text`` sections as :func:`~medvl.models.aligner.create_aligner` overrides."""
    return {
        f"{section}.{key}": value
        for section in ("image", "text")
        for key, value in getattr(config, section).items()
    }


def stage_dir(config: PretrainConfig, index: int) -> Path:
    """Folder of stage ``index`` (``01-mlm``, ``02-contrastive`` ...)."""
    return config.output_dir / f"{index + 1:02d}-{config.stages[index].name}"


def pretrain(config: PretrainConfig) -> dict[str, Any]:
    """Run (or finish) every stage of ``config``; returns the summary also written to disk."""
    import torch

    from medvl.data.processes import process_state
    from medvl.models.aligner import MedVLAligner, create_aligner
    from medvl.models.ssl.objective import method_problem
    from medvl.train.pretrain.contrastive import run_contrastive_stage
    from medvl.train.pretrain.image_ssl import run_image_ssl_stage
    from medvl.train.pretrain.mlm import run_mlm_stage

    runners = {
        "mlm": run_mlm_stage,
        "image_ssl": run_image_ssl_stage,
        "contrastive": run_contrastive_stage,
    }

    state = process_state(any(stage.train.cpu for stage in config.stages))
    main = state.is_main_process
    out = config.output_dir
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    torch.manual_seed(config.seed)
    aligner = create_aligner(config.model, **starting_overrides(config))
    for stage in config.stages:  # before any stage trains: a mismatch is a config error
        problem = method_problem(stage.method, aligner.image_tower)
        if stage.kind == "image_ssl" and problem is not None:
            raise ConfigError(f"stages.{stage.name}.method: {problem}")
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
        numbers = runners[stage.kind](aligner, stage, train)
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
