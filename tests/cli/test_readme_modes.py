"""The README's "Fine-tuning modes and subgroup metrics" commands, through the CLI's loaders."""

from __future__ import annotations

import shlex
from pathlib import Path

from medvl.cli.common import job_config
from medvl.eval.jobs import RetrievalJob, ZeroShotJob
from medvl.models.aligner import PRESETS
from medvl.train.finetune import FinetuneConfig

ROOT = Path(__file__).resolve().parents[2]
HEADING = "### Fine-tuning modes and subgroup metrics"


def test_every_command_of_the_section_resolves_to_what_it_says(readme_code) -> None:
    commands = [shlex.split(line) for line in readme_code(HEADING, "bash").splitlines() if line]
    resolved = []
    for argv in commands:
        assert argv[0] == "medvl"
        overrides = [w for w in argv if "=" in w]
        if argv[1] == "finetune":
            config = ROOT / argv[argv.index("-c") + 1]
            resolved.append(job_config(FinetuneConfig, config, overrides))
        else:
            assert [w for w in argv if w.startswith("-")] == ["-m", "-d", "-o"]
            job = {"zeroshot": ZeroShotJob, "evaluate": RetrievalJob}[argv[1]]
            resolved.append(job_config(job, None, overrides))
    projection, wise, prompt, vit, stratified, zeroshot, evaluate = resolved
    assert (wise.mode, wise.few_shot.k, wise.head_lr, wise.wise_alpha) == ("lora", 16, 1e-2, 0.5)
    assert (projection.mode, prompt.mode, prompt.head.context_init) == (
        "projection",
        "prompt_learning",
        "chest",
    )
    assert vit.model in PRESETS and vit.mode == "lora"
    fields = ("sex", "age_band", "view", "manufacturer")
    assert tuple(stratified.subgroups) == fields and tuple(zeroshot.subgroups) == fields
    assert evaluate.subgroups == ["manufacturer"] and evaluate.subgroup_min_images == 10
