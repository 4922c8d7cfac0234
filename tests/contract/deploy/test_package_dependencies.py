"""Every third-party module the package imports comes with its main dependencies: a plain
``pip install .`` is enough for ``import service.client`` and the rest."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"service", "__future__"}


def _requirement_name(requirement: str) -> str:
    return _canonical(re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0])


def _installed_with(roots: set[str]) -> set[str]:
    """The distributions ``pip install`` of ``roots`` brings (their non-extra requirements)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        todo.extend(_requirement_name(r) for r in needs if "extra ==" not in r)
    return seen


def test_every_imported_distribution_is_a_main_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _installed_with({_requirement_name(d) for d in project["dependencies"]})
    distributions = packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level_modules()):
        names = {_canonical(d) for d in distributions.get(module, [module])}
        # onnxruntime comes with the `cpu` or the `gpu` extra (each build provides the module;
        # never both), imported only where installed (service/backends/ort_runtime.py).
        optional = module == "onnxruntime" and {"cpu", "gpu"} <= set(
            project["optional-dependencies"]
        )
        if not names & declared and not optional:
            missing[module] = sorted(names)
    assert not missing, f"imported by service/ but not in [project].dependencies: {missing}"
