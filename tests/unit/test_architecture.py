"""The package's shape: subpackages import downward only, and functions stay short."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]
MAX_FUNCTION_LINES = 60
# Every folder of code a newcomer reads (tests have long tables of cases, not long logic).
CHECKED = ("service", "loadtest", "models")


def test_subpackages_import_downward_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layers contract in pyproject.toml ([tool.importlinter]): no import cycles."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    assert lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True) == 0


def _long_functions(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = (node.end_lineno or node.lineno) - first + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    return found


@pytest.mark.parametrize("folder", CHECKED)
def test_no_function_over_60_lines(folder: str) -> None:
    assert _long_functions(ROOT / folder) == []
