"""A virtualenv with the package's ``gpu`` extra (the real onnxruntime-gpu wheel), built once and
kept in the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``; the test run's own temp
folder is removed at its end), keyed by what it installs: later test runs, and later clones on
the same machine, reuse it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Set to reuse (or place) the environment elsewhere, e.g. on a CI cache volume.
LOCATION_VARIABLE = "EMBED_GPU_WHEEL_VENV"


def _key() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = [*project["dependencies"], *project["optional-dependencies"]["gpu"]]
    spec.append(f"{sys.version_info.major}.{sys.version_info.minor}")
    return hashlib.sha256("\n".join(spec).encode()).hexdigest()[:12]


def location() -> Path:
    explicit = os.environ.get(LOCATION_VARIABLE)
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "embedding-service" / f"gpu-wheel-{_key()}"


def python(folder: Path) -> Path:
    return folder / "bin" / "python"


def ensure(timeout: float = 1200.0) -> Path:
    """The scratch environment's interpreter, after ``pip install <repo>[gpu]`` into it (only
    the first time: a stamp file marks a finished install)."""
    folder = location()
    stamp = folder / ".installed"
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (pytest-xdist workers, two test runs): the others wait for it.
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(folder)
            subprocess.run(
                [python(folder), "-m", "pip", "install", "-q", f"{ROOT}[gpu]"],
                check=True,
                timeout=timeout,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
            stamp.touch()
    return python(folder)


if __name__ == "__main__":
    print(ensure())
