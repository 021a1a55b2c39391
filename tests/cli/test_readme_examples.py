"""Every command of the README's "Scripted training" section parses, through the CLI's loaders.

Each command's config file and ``key=value`` overrides go through
:func:`medvl.cli.common.job_config` (what the commands call) and the resolved values are
asserted, so a README example that stops working, or silently means something else, fails
here. Shipped configs load too.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medvl.cli.common import job_config
from medvl.cli.data import phantom_config
from medvl.data.phantom import phantom_hash

ROOT = Path(__file__).resolve().parents[2]


def scripted_training_commands(block: str) -> list[list[str]]:
    """The ``medvl ...`` part of each line of the section's bash block, as argv lists."""
    commands = []
    for line in block.splitlines():
        argv = shlex.split(line.split("  #", 1)[0])
        if argv:
            commands.append(argv[argv.index("medvl") + 1 :])
    return commands


def split_args(argv: list[str]) -> tuple[Path | None, list[str], dict[str, str]]:
    """(config file, overrides, flags) of one command's arguments."""
    config, overrides, flags = None, [], {}
    words = iter(argv)
    for word in words:
        if word in ("-c", "--config"):
            config = ROOT / next(words)
        elif word.startswith("--"):
            flags[word[2:]] = next(words)
        elif "=" in word:
            overrides.append(word)
    return config, overrides, flags


def pretrain(argv: list[str]) -> Any:
    from medvl.train.pretrain import PretrainConfig

    config, overrides, _ = split_args(argv[1:])
    return job_config(PretrainConfig, config, overrides)


def finetune(argv: list[str]) -> Any:
    from medvl.train.finetune import FinetuneConfig

    config, overrides, _ = split_args(argv[1:])
    return job_config(FinetuneConfig, config, overrides)


def segment(argv: list[str]) -> Any:
    from medvl.train.segment import SegmentConfig

    config, overrides, _ = split_args(argv[1:])
    return job_config(SegmentConfig, config, overrides)


def phantom(argv: list[str]) -> Any:
    config, overrides, flags = split_args(argv[2:])
    numbers = {k: int(v) for k, v in flags.items() if k in ("n", "seed", "size", "workers")}
    return phantom_config(config, overrides, **numbers), Path(flags["out"])


def check_dapt_defaults(cfg: Any) -> None:
    assert [s.name for s in cfg.stages] == ["mlm", "contrastive"]
    assert [s.train.lr for s in cfg.stages] == [pytest.approx(5e-5), pytest.approx(3e-4)]


def check_shared_lr(cfg: Any) -> None:
    assert [s.train.lr for s in cfg.stages] == [pytest.approx(1e-4)] * 2
    assert [s.train.max_steps for s in cfg.stages] == [3000, 0]  # the rest stays per stage


def check_short_dapt(cfg: Any) -> None:
    assert [s.train.max_steps for s in cfg.stages] == [100, 100]
    assert [s.train.lr for s in cfg.stages] == [pytest.approx(5e-5), pytest.approx(3e-4)]
    assert cfg.output_dir == Path("runs/dapt_short")


def check_phantom_matches_dapt(made: tuple[Any, Path]) -> None:
    """What the first command generates is what configs/dapt_phantom.yaml then reuses."""
    from medvl.train.pretrain import PretrainConfig

    cfg, out = made
    assert (cfg.n_studies, cfg.size, cfg.seed) == (4000, 512, 0)
    dapt = job_config(PretrainConfig, ROOT / "configs" / "dapt_phantom.yaml", [])
    data = dapt.stages[1].data
    assert data.manifest.parent == out and phantom_hash(data.phantom) == phantom_hash(cfg)


def check_few_shot(cfg: Any) -> None:
    assert cfg.few_shot.k == 16 and cfg.mode == "lora"


def check_sam_vit_b(cfg: Any) -> None:
    assert (cfg.model.variant, cfg.model.img_size) == ("vit_b", 1024)
    assert cfg.model.checkpoint == "/weights/sam_vit_b_01ec64.pth"
    assert cfg.output_dir == Path("runs/sam_phantom_lungs")


# command line (after "medvl") -> (loader, checks of the resolved config)
EXPECTED: dict[str, tuple[Callable[[list[str]], Any] | None, Callable[[Any], None] | None]] = {
    "data phantom --n 4000 --out runs/phantom --size 512": (phantom, check_phantom_matches_dapt),
    "pretrain -c configs/dapt_phantom.yaml": (pretrain, check_dapt_defaults),
    "pretrain -c configs/dapt_phantom.yaml train.lr=1e-4": (pretrain, check_shared_lr),
    "pretrain -c configs/dapt_phantom.yaml train.max_steps=100 stages.mlm.train.lr=5e-5 "
    "output_dir=runs/dapt_short": (pretrain, check_short_dapt),
    "finetune -c configs/lora_findings.yaml few_shot.k=16": (finetune, check_few_shot),
    "merge-lora --model runs/dapt_phantom/model --adapter runs/lora_findings/adapter "
    "--out runs/merged": (None, None),  # no config: flags only
    "segment-finetune -c configs/sam_phantom_lungs.yaml model.variant=vit_b "
    "model.checkpoint=/weights/sam_vit_b_01ec64.pth model.img_size=1024":
        (segment, check_sam_vit_b),
}  # fmt: skip


def test_every_readme_command_has_its_expectations(readme_code) -> None:
    block = readme_code("### Scripted training", "bash")
    shown = {" ".join(argv) for argv in scripted_training_commands(block)}
    assert shown == set(EXPECTED)


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_readme_command_resolves(command: str) -> None:
    load, check = EXPECTED[command]
    if load is not None and check is not None:
        check(load(command.split()))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("dapt_phantom_tiny", "pretrain"),
        ("lora_findings_tiny", "finetune"),
        ("sam_phantom_lungs_tiny", "segment"),
        ("demo_full", "demo"),
        ("demo_small", "demo"),
    ],
)
def test_shipped_configs_load_with_one_output_dir(name: str, kind: str) -> None:
    from medvl.demo import DemoConfig
    from medvl.train.finetune import FinetuneConfig
    from medvl.train.pretrain import PretrainConfig
    from medvl.train.segment import SegmentConfig

    cls = {
        "pretrain": PretrainConfig,
        "finetune": FinetuneConfig,
        "segment": SegmentConfig,
        "demo": DemoConfig,
    }[kind]
    config = job_config(cls, ROOT / "configs" / f"{name}.yaml", [])
    assert config.output_dir.parts[0] == "runs"
