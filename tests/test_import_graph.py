"""The import graph follows the house: data flows io -> data -> models -> train/eval/infer.

Every module under ``medvl/`` is parsed with :mod:`ast`, so function-local imports, relative
imports, ``from medvl import name`` (resolved through the face) and literal
``importlib.import_module("medvl....")`` calls all count. Each violation is reported as
``module -> imported (rule)``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import medvl

PACKAGE_DIR = Path(medvl.__file__).parent

# Layers bottom -> top; a module may import its own layer's units and those below it.
TIERS: dict[str, int] = {
    "medvl.config": 0,
    "medvl.findings": 0,
    "medvl.io": 1,
    "medvl.data": 2,
    "medvl.models": 3,
    "medvl.train": 4,
    "medvl.eval": 4,
    "medvl.infer": 4,
    "medvl.demo": 5,
    "medvl.cli": 5,
}
# Imports between two units of one tier: allowed where listed, else the rule named here.
SIBLINGS_ALLOWED = {("medvl.train", "medvl.eval"), ("medvl.cli", "medvl.demo")}
SIBLING_RULES = {
    ("medvl.eval", "medvl.train"): "eval never imports train",
    ("medvl.eval", "medvl.infer"): "eval never imports infer",
    ("medvl.infer", "medvl.train"): "infer never imports train; what infer loads lives in models",
    ("medvl.train", "medvl.infer"): "train never imports infer",
    ("medvl.demo", "medvl.cli"): "demo never imports the cli",
}
TORCH_FREE = (
    "medvl.io.dicom",
    "medvl.io.series",
    "medvl.io.reports",
    "medvl.io.labeler",
    "medvl.io.deid",
)


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (packages by their ``__init__.py``)."""
    names = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def unit_of(module: str) -> str | None:
    """The layer unit (``medvl.io``, ``medvl.train`` ...) that ``module`` belongs to."""
    return next((u for u in TIERS if module == u or module.startswith(u + ".")), None)


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The medvl modules a ``from ... import ...`` statement reaches."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    if source != "medvl" and not source.startswith("medvl."):
        return []
    targets = []
    for alias in node.names:
        child = f"{source}.{alias.name}"
        if child in MODULES:
            targets.append(child)
        elif source == "medvl":
            targets.append(medvl._FACE.get(alias.name, "medvl"))
        else:
            targets.append(source)
    return targets


def _literal_import_module(node: ast.Call) -> str | None:
    """The module of an ``importlib.import_module("literal")`` call, if it is one."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name != "import_module" or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def imported_modules(module: str, source: str, is_package: bool = False) -> list[str]:
    """Every medvl module ``source`` (the text of ``module``) imports, anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "medvl"]
        elif isinstance(node, ast.ImportFrom):
            found += _resolve_from(module, is_package, node)
        elif isinstance(node, ast.Call):
            target = _literal_import_module(node)
            if target and target.split(".")[0] == "medvl":
                found.append(target)
    return found


def rule_broken(module: str, target: str) -> str | None:
    """Why ``module`` may not import ``target``, or None when it may."""
    unit, target_unit = unit_of(module), unit_of(target)
    if unit is None:
        return "module outside every layer"
    if target_unit is None:
        return None if target == "medvl" else "import of a module outside every layer"
    if unit == target_unit:
        return None
    lower, upper = unit.removeprefix("medvl."), target_unit.removeprefix("medvl.")
    if TIERS[target_unit] > TIERS[unit]:
        return f"upward: {lower} sits below {upper}"
    if TIERS[target_unit] == TIERS[unit] and (unit, target_unit) not in SIBLINGS_ALLOWED:
        return SIBLING_RULES.get((unit, target_unit), f"{lower} never imports its sibling {upper}")
    return None


def violations_in(module: str, source: str, is_package: bool = False) -> list[str]:
    """``module -> imported (rule)`` for each module ``source`` imports against a layer rule."""
    lines = []
    for target in dict.fromkeys(imported_modules(module, source, is_package)):
        rule = rule_broken(module, target)
        if rule:
            lines.append(f"{module} -> {target} ({rule})")
    return lines


def face_violations(source: str) -> list[str]:
    """Imports the face runs when ``medvl`` is imported that are not the standard library."""
    lines = []
    pending: list[ast.AST] = [ast.parse(source)]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        else:
            names = []
        for name in names:
            top = name.split(".")[0]
            if top != "__future__" and top not in sys.stdlib_module_names:
                lines.append(f"medvl -> {name} (the face imports only the standard library)")
        pending.extend(ast.iter_child_nodes(node))
    return lines


def package_violations() -> list[str]:
    """Every layer violation in the package, the face's import-time imports included."""
    lines = []
    for module, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        if module == "medvl":
            lines += face_violations(source)
        else:
            lines += violations_in(module, source, is_package=path.name == "__init__.py")
    return lines


def test_no_module_imports_a_layer_above_it() -> None:
    violations = package_violations()
    for line in violations:
        print(line)
    assert not violations, "layer violations:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "medvl.io.dicom",
            "def read():\n    from medvl.models.aligner import create_aligner\n",
            "medvl.io.dicom -> medvl.models.aligner (upward: io sits below models)",
        ),
        (
            "medvl.data.records",
            "from medvl import create_aligner\n",
            "medvl.data.records -> medvl.models.aligner (upward: data sits below models)",
        ),
        (
            "medvl.infer.pipeline",
            "import medvl.train.finetune.steps\n",
            "medvl.infer.pipeline -> medvl.train.finetune.steps "
            "(infer never imports train; what infer loads lives in models)",
        ),
        (
            "medvl.models.sam.cache",
            "from ...train import engine\n",
            "medvl.models.sam.cache -> medvl.train.engine (upward: models sits below train)",
        ),
        (
            "medvl.eval.jobs",
            "import importlib\nimportlib.import_module('medvl.infer.pipeline')\n",
            "medvl.eval.jobs -> medvl.infer.pipeline (eval never imports infer)",
        ),
        (
            "medvl.config",
            "from medvl.io import dicom\n",
            "medvl.config -> medvl.io.dicom (upward: config sits below io)",
        ),
    ],
)
def test_checker_catches_a_planted_violation(module: str, source: str, expected: str) -> None:
    assert violations_in(module, source) == [expected]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("medvl.train.segment", "from medvl.eval.segmentation import case_metrics\n"),
        ("medvl.cli.demo", "from medvl.demo import run_demo\n"),
        ("medvl.models.aligner", "from medvl.io.dicom import read_dicom\nimport medvl\n"),
        ("medvl.data.phantom", "from .generate import generate_phantoms\n"),
    ],
)
def test_checker_allows_downward_and_listed_sibling_imports(module: str, source: str) -> None:
    assert violations_in(module, source, is_package=module == "medvl.data.phantom") == []


def test_face_checker_catches_a_non_stdlib_import() -> None:
    source = "import importlib\nimport torch\n\ndef f():\n    import numpy\n"
    assert face_violations(source) == [
        "medvl -> torch (the face imports only the standard library)"
    ]


def test_every_module_belongs_to_a_layer() -> None:
    assert [m for m in MODULES if m != "medvl" and unit_of(m) is None] == []


def _loaded_after(statement: str) -> list[str]:
    """The ``sys.modules`` keys a fresh interpreter holds after running ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_io_imports_without_torch() -> None:
    loaded = _loaded_after("import medvl, " + ", ".join(TORCH_FREE))
    assert "torch" not in loaded


def test_import_medvl_loads_no_submodule_and_no_torch() -> None:
    loaded = _loaded_after("import medvl")
    assert [m for m in loaded if m.startswith("medvl.")] == []
    assert "torch" not in loaded and "numpy" not in loaded
