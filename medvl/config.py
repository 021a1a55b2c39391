"""YAML job configs mapped onto dataclasses, with validation and dotted overrides.

Every job (ingest, pretrain, finetune, segment, infer, demo) is one dataclass. A YAML file fills
it, ``key=value`` overrides from the command line patch it, and the resolved config is saved
beside the run so a result can always be traced to the exact settings that produced it.

Unknown keys are errors naming the key (a typo must never silently fall back to a default), and
values of the wrong type are errors naming the key and the expected type. So are a key given
twice in one mapping (YAML would keep the last silently), a NaN or infinite number, an empty
config file, and a file that is not YAML text (the line and column of the problem are named).

Overrides address nested sections with dots and list items by 0-based index or by name
(``stages.0.train.lr=5e-5`` or ``stages.mlm.train.lr=5e-5``: the item whose ``name`` is
``mlm``). A config dataclass may define a classmethod ``prepare_config(data) -> data`` that
rewrites its raw mapping before validation (e.g. :class:`~medvl.train.pretrain.PretrainConfig`
spreads its shared ``train`` section into every stage). It runs, for every dataclass of the
config tree, on the file's mapping and again after each override, so overrides apply left to
right and the later one wins.

A section given in part keeps the defaults of the config that owns it, not those of its class:
``data.phantom.seed=3`` in a segmentation job changes the seed of its 40 phantom studies at
512 px (:class:`~medvl.data.seg_samples.SegDataConfig`), not of the 2,000 at 1,024 px that
:class:`~medvl.data.phantom.PhantomConfig` alone would make.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not fit its dataclass."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"line {line}: key {key!r} given twice (first on line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """Parse YAML text strictly (duplicate keys refused); errors are one-line ConfigErrors."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = err.problem or err.context or "not valid YAML"
        if "'\\t'" in problem:
            problem += " (YAML indents with spaces, not tabs)"
        raise ConfigError(f"{where}{problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({str(err).splitlines()[0]})") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type ``tp``, or raise naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # X | None: keep X's own error (an unknown key inside a section)
            return _coerce(value, options[0], key)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(
                _coerce(v, a, f"{key}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None and not math.isfinite(number):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        if number is not None:
            return number
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _section_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of ``cls`` when it is a section (a dataclass), else None."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    if spec.default_factory is not dataclasses.MISSING:
        value = spec.default_factory()
    else:
        value = spec.default
    return value if dataclasses.is_dataclass(value) and not isinstance(value, type) else None


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "", base: Any = None) -> T:
    """``cls`` from ``data``; a section given in part keeps its owner's defaults (``base``)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}"
            + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
            + f"; {cls.__name__} accepts: {sorted(names)}"
        )
    kwargs = {}
    for key, value in data.items():
        start = None
        if isinstance(value, Mapping):
            start = getattr(base, key) if base is not None else _section_default(cls, key)
        if dataclasses.is_dataclass(start) and not isinstance(start, type):
            kwargs[key] = _build(type(start), value, f"{prefix}{key}.", start)
        else:
            kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from err


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = parse_yaml(raw) if raw != "" else ""
    except ConfigError as err:
        raise ConfigError(f"override {text!r}: {err}") from None
    return key.strip().split("."), value


def _list_index(items: list[Any], part: str, where: str, text: str) -> int:
    """Position in ``items`` of ``part``: a 0-based index or the ``name`` of a mapping item."""
    if part.isdigit():
        if int(part) >= len(items):
            raise ConfigError(
                f"override {text!r}: index {part} is out of range ({where} has {len(items)} items)"
            )
        return int(part)
    names = [item.get("name") if isinstance(item, Mapping) else None for item in items]
    if part not in names:
        known = [n for n in names if n]
        raise ConfigError(
            f"override {text!r}: no item of {where} is named {part!r} (names: {known}; "
            f"or use an index 0..{len(items) - 1})"
        )
    return names.index(part)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each dotted ``key=value`` override applied.

    A part of the key that meets a list picks an item by 0-based index or by the item's
    ``name`` (``stages.1.train.lr=1e-4``, ``stages.contrastive.train.lr=1e-4``).
    """
    out = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = out
        for depth, part in enumerate(path):
            where = ".".join(path[:depth]) or "the config"
            last = depth == len(path) - 1
            if isinstance(node, list):
                index = _list_index(node, part, where, text)
                if last:
                    node[index] = value
                elif not isinstance(node[index], dict):
                    raise ConfigError(f"override {text!r}: {where}.{part} is not a section")
                else:
                    node = node[index]
            elif last:
                node[part] = value
            else:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                elif not isinstance(child, (dict, list)):
                    raise ConfigError(f"override {text!r}: {part} is not a section")
                node = child
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _nested_dataclass(tp: Any) -> tuple[Any, bool]:
    """The dataclass inside annotation ``tp`` (``X``, ``X | None``, ``list[X]``) and whether
    ``tp`` is a list of it; ``(None, False)`` when there is none."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in args if arg is not type(None)]
        return _nested_dataclass(options[0]) if len(options) == 1 else (None, False)
    if origin in (list, tuple, Sequence) and args and dataclasses.is_dataclass(args[0]):
        return args[0], True
    return (tp, False) if dataclasses.is_dataclass(tp) else (None, False)


def _prepare(cls: Any, data: Any) -> Any:
    """Run ``prepare_config`` of ``cls`` and of every dataclass nested in it, innermost first."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return data
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        inner, is_list = _nested_dataclass(hints.get(key))
        if inner is None:
            continue
        if is_list and isinstance(value, list):
            data[key] = [_prepare(inner, item) for item in value]
        elif not is_list:
            data[key] = _prepare(inner, value)
    hook = getattr(cls, "prepare_config", None)
    return hook(data) if hook is not None else data


def from_dict(cls: type[T], data: Mapping[str, Any], overrides: Sequence[str] = ()) -> T:
    """Build dataclass ``cls`` from a mapping plus dotted overrides, validating every key.

    Overrides apply left to right; the ``prepare_config`` hooks run on the mapping and after
    each override (see the module docstring).
    """
    out = _prepare(cls, _deep_copy(dict(data)))
    for text in overrides:
        out = _prepare(cls, apply_overrides(out, [text]))
    return _build(cls, out)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load a YAML file (optional) onto ``cls`` and apply ``key=value`` overrides.

    Parameters
    ----------
    cls
        The job's config dataclass.
    path
        YAML file; ``None`` starts from the dataclass defaults.
    overrides
        ``dotted.key=value`` strings; values are parsed as YAML (``lr=1e-4``, ``tags=[a,b]``).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML text file (binary content)") from None
        if "\x00" in text:
            raise ConfigError(f"{path}: not a YAML text file (binary content)")
        try:
            loaded = parse_yaml(text)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        if loaded is None:
            raise ConfigError(
                f"{path}: the config file is empty; give settings, or leave out --config to run "
                "with the defaults"
            )
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        data = dict(loaded)
    try:
        return from_dict(cls, data, overrides)
    except ConfigError as err:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A YAML/JSON-safe dict of a config dataclass (paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (beside a run's outputs) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return path
