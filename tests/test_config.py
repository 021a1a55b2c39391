"""Config loading: YAML onto dataclasses, unknown keys and wrong types named, dotted overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medvl.config import ConfigError, from_dict, load_config, save_config, to_dict


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


@dataclass
class StepConfig:
    name: str = ""
    lr: float = 1e-3


@dataclass
class PipelineJob:
    steps: list[StepConfig] = field(default_factory=lambda: [StepConfig("a"), StepConfig("b")])
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.5))
    extra: OptimConfig | None = None


def test_list_items_by_index_and_by_name() -> None:
    data = {"steps": [{"name": "a"}, {"name": "b", "lr": 0.2}]}
    cfg = from_dict(PipelineJob, data, ["steps.0.lr=0.1", "steps.b.lr=0.3"])
    assert [s.lr for s in cfg.steps] == [pytest.approx(0.1), pytest.approx(0.3)]
    assert data["steps"][0] == {"name": "a"}  # the caller's mapping is not touched
    with pytest.raises(ConfigError, match=r"index 2 is out of range \(steps has 2 items\)"):
        from_dict(PipelineJob, data, ["steps.2.lr=0.1"])
    with pytest.raises(ConfigError, match=r"no item of steps is named 'c' \(names: \['a', 'b'\]"):
        from_dict(PipelineJob, data, ["steps.c.lr=0.1"])


def test_a_section_given_in_part_keeps_its_owners_defaults() -> None:
    cfg = from_dict(PipelineJob, {"optim": {"betas": [0.8, 0.9]}})
    assert cfg.optim.lr == 0.5 and cfg.optim.betas == (0.8, 0.9)  # not OptimConfig's 1e-3
    cfg = from_dict(PipelineJob, {}, ["extra.lr=0.2"])  # None default: the class defaults
    assert cfg.extra == OptimConfig(lr=0.2)


def test_an_optional_sections_own_error_is_kept() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key extra\.learning_rate"):
        from_dict(PipelineJob, {"extra": {"learning_rate": 0.1}})


@dataclass
class SharedJob:
    """A toy with a ``prepare_config`` hook: ``shared.lr`` is spread into every step."""

    steps: list[StepConfig] = field(default_factory=lambda: [StepConfig("a"), StepConfig("b")])

    @classmethod
    def prepare_config(cls, data: dict) -> dict:
        shared = data.pop("shared", None)
        for step in data.get("steps", []):
            step.update(shared or {})
        return data


@dataclass
class Outer:
    job: SharedJob = field(default_factory=SharedJob)


def test_prepare_hook_runs_after_each_override_left_to_right() -> None:
    data = {"steps": [{"name": "a"}, {"name": "b"}]}
    cfg = from_dict(SharedJob, data, ["shared.lr=0.1", "steps.a.lr=0.2"])
    assert [s.lr for s in cfg.steps] == [pytest.approx(0.2), pytest.approx(0.1)]
    cfg = from_dict(SharedJob, data, ["steps.a.lr=0.2", "shared.lr=0.1"])
    assert [s.lr for s in cfg.steps] == [pytest.approx(0.1), pytest.approx(0.1)]
    nested = from_dict(Outer, {"job": {**data, "shared": {"lr": 0.3}}})  # hooks run nested too
    assert [s.lr for s in nested.job.steps] == [pytest.approx(0.3), pytest.approx(0.3)]


def test_duplicate_keys_nan_and_empty_files_are_config_errors(tmp_path: Path) -> None:
    file = tmp_path / "job.yaml"
    file.write_text("optim:\n  lr: 0.1\nname: a\noptim:\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"job.yaml: line 4: key 'optim' given twice \(first"):
        load_config(JobConfig, file)
    file.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="line 3: key 'lr' given twice"):
        load_config(JobConfig, file)
    file.write_text("name: a\noptim: {lr: 0.1}\ntags: [lr, lr]\n")  # same key, other mappings
    assert load_config(JobConfig, file).tags == ["lr", "lr"]
    for value in (".nan", ".inf", "-.inf", "nan"):
        with pytest.raises(ConfigError, match="optim.lr: .* is not a finite number"):
            load_config(JobConfig, None, [f"optim.lr={value}"])
    file.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match="job.yaml: the config file is empty"):
        load_config(JobConfig, file)
    file.write_bytes(b"name: \x00\x01\x02")
    with pytest.raises(ConfigError, match="not a YAML text file"):
        load_config(JobConfig, file)
    file.write_text("optim:\n\tlr: 0.1\n")
    with pytest.raises(ConfigError, match="line 2, column 1: .* not tabs"):
        load_config(JobConfig, file)
    with pytest.raises(ConfigError, match=r"override 'tags=\[a,': line 1"):
        load_config(JobConfig, None, ["tags=[a,"])
