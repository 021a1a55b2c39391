"""Config loading: YAML onto dataclasses, unknown keys and wrong types named, dotted overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medvl.config import ConfigError, load_config, save_config, to_dict


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class JobConfig:
    name: str = "job"
    steps: int = 10
    out: Path = Path("runs/x")
    mode: str = "lora"
    tags: list[str] = field(default_factory=list)
    window: tuple[float, float] | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)


def test_defaults_without_file() -> None:
    cfg = load_config(JobConfig)
    assert cfg == JobConfig()


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: a\nsteps: 5\noptim:\n  lr: 0.1\n")
    cfg = load_config(JobConfig, path, ["optim.lr=1e-4", "tags=[x, y]", "window=[40, 400]"])
    assert cfg.name == "a" and cfg.steps == 5
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.optim.betas == (0.9, 0.999)
    assert cfg.tags == ["x", "y"]
    assert cfg.window == (40.0, 400.0)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key optim\.learning_rate"):
        load_config(JobConfig, path)


def test_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError, match=r"steps: expected an integer"):
        load_config(JobConfig, None, ["steps=ten"])
    with pytest.raises(ConfigError, match=r"optim\.betas: expected 2 values"):
        load_config(JobConfig, None, ["optim.betas=[0.9]"])


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(JobConfig, None, ["steps"])


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(JobConfig, tmp_path / "nope.yaml")


def test_save_round_trip(tmp_path: Path) -> None:
    cfg = load_config(JobConfig, None, ["tags=[a]", "window=[1, 2]", "optim.lr=0.5"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(JobConfig, path)
    assert again == cfg
    assert to_dict(again)["out"] == "runs/x"
