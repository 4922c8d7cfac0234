"""dev.py's setup: pip runs when pyproject.toml changed or something asked for is missing,
never again when switching between commands whose extras are already installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, list[list[Any]]]:
    """dev.py with its .venv in ``tmp_path`` (the interpreter present) and pip recorded."""
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    monkeypatch.setattr(module, "VENV", venv)
    monkeypatch.setattr(module, "PY", venv / "bin" / "python")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    installs: list[list[Any]] = []
    monkeypatch.setattr(module.subprocess, "run", lambda command, **_: installs.append(command[4:]))
    return module, installs


def pip_installs(installs: list[list[Any]]) -> list[list[Any]]:
    return [i for i in installs if i != ["-q", "--upgrade", "pip"]]


def test_switching_commands_installs_nothing_again(dev: tuple[ModuleType, list]) -> None:
    module, installs = dev
    module.ensure_env("test,load,reference", with_torch=True)  # dev.py test
    module.ensure_env("", with_torch=False)  # dev.py run: a subset, installed
    module.ensure_env("test,load", with_torch=False)  # dev.py bench
    module.ensure_env("test,load,reference", with_torch=True)  # dev.py test again
    assert len(pip_installs(installs)) == 1


def test_what_is_missing_is_installed_and_remembered(dev: tuple[ModuleType, list]) -> None:
    module, installs = dev
    module.ensure_env("", with_torch=False)
    module.ensure_env("test,load", with_torch=False)
    module.ensure_env("", with_torch=False)
    module.ensure_env("test,load", with_torch=False)
    root = module.ROOT
    assert pip_installs(installs) == [["-q", f"-e{root}"], ["-q", f"-e{root}[test,load]"]]


def test_a_changed_pyproject_installs_again(dev: tuple[ModuleType, list]) -> None:
    module, installs = dev
    module.ensure_env("test", with_torch=False)
    (module.ROOT / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    module.ensure_env("", with_torch=False)
    assert len(pip_installs(installs)) == 2
    assert len(list(module.VENV.glob(".installed-*"))) == 1
