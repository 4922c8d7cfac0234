#!/usr/bin/env python3
"""Set up and run: ``python3 dev.py run`` (service on the demo table), ``python3 dev.py test``,
``python3 dev.py redis`` (a local Redis Cluster, the demo table pushed into it, served),
``python3 dev.py bench`` (loadtest/bench.py), ``python3 dev.py gpu-check`` (a GPU host: the
CUDA build in ``.venv-gpu``, the GPU tests and a report) or ``python3 dev.py docs`` (regenerate the
settings tables of README.md and docs/api.md from service/settings.py).

Needs Python 3.11+ and the package registries: creates ``.venv``, installs the package
with the extras the command needs (again only when pyproject.toml changed or an extra is
missing), then runs the command inside it. ``test`` and ``redis`` also need redis-server,
installed with apt-get when missing (as root); every other tool the tests run (kubectl,
hadolint, compose) comes as a wheel in the test extra. README.md, "What you need, and what
it costs", has the figures.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"

# The torch the reference tests were checked against. On Linux, PyPI's torch is a multi-GB
# CUDA build: REFERENCE=0 skips it and the reference tests report themselves as skipped by name.
TORCH_PIN = "torch==2.13.0"
MODELS = ROOT / "models" / "repository"


def ensure_env(extras: str, with_torch: bool) -> None:
    """``.venv`` with the package and ``extras`` (and torch): pip runs only when pyproject.toml
    changed or something asked for is not installed yet. The stamp of this pyproject.toml
    lists what is installed, so switching between commands (test's extras include run's)
    installs nothing again."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may run on any python3
        sys.exit("Python 3.11 or newer is needed")
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = (ROOT / "pyproject.toml").read_bytes() + TORCH_PIN.encode()
    stamp = VENV / f".installed-{hashlib.sha256(spec).hexdigest()[:16]}"
    wanted = {extra for extra in extras.split(",") if extra} | ({"torch"} if with_torch else set())
    installed = set(stamp.read_text().split()) if stamp.exists() else set()
    if stamp.exists() and wanted <= installed:
        return
    subprocess.run([PY, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    packages = [f"-e{ROOT}[{extras}]" if extras else f"-e{ROOT}"]
    if with_torch:
        packages.append(TORCH_PIN)
    print(f"installing {' '.join(packages)}", flush=True)
    subprocess.run([PY, "-m", "pip", "install", "-q", *packages], check=True)
    for old in VENV.glob(".installed-*"):
        if old != stamp:  # another pyproject.toml's: what it lists may be stale now
            old.unlink()
    stamp.write_text("".join(f"{name}\n" for name in sorted(installed | wanted)))


def run_foreground(command: list[str | Path]) -> int:
    """Run ``command`` and return its exit code; Ctrl-C is the child's to handle.

    The terminal sends SIGINT to the whole process group: the server drains and exits on its
    own, so this process only waits for it (no KeyboardInterrupt traceback, no killed child).
    """
    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


REDIS_HINT = "redis-server is needed: apt-get install redis-server (Debian/Ubuntu)"


def ensure_redis_server() -> None:
    """Install redis-server (Debian package) when missing and we may; else exit saying how."""
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing redis-server (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=False, env=env)
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        sys.exit(REDIS_HINT)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    rest = argv[1:]
    os.chdir(ROOT)
    if command == "run":
        ensure_env("cpu", with_torch=False)
        # The default model repository (ignored by git): the service writes the demo tables
        # into an existing folder only.
        MODELS.mkdir(parents=True, exist_ok=True)
        return run_foreground([BIN / "embedding-service", "serve", *rest])
    if command == "test":
        reference = os.environ.get("REFERENCE", "1") != "0"
        extras = "cpu,test,load,reference" if reference else "cpu,test,load"
        ensure_env(extras, with_torch=reference)
        ensure_redis_server()  # the Redis tests start real servers; missing is a failure
        # mypy: strict on service/, as [tool.mypy] in pyproject.toml says.
        for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]):
            if subprocess.call([BIN / check[0], *check[1:]]) != 0:
                return 1
        workers = os.environ.get("PYTEST_WORKERS", "2")
        return run_foreground([PY, "-m", "pytest", "-n", workers, *rest])
    if command == "redis":
        ensure_env("cpu", with_torch=False)
        ensure_redis_server()
        return run_foreground([PY, "-m", "service.dev_redis", *rest])
    if command == "docs":  # the settings tables of README.md and docs/api.md, from settings.py
        ensure_env("cpu", with_torch=False)
        return run_foreground([PY, "-m", "service.settings_table", "--write"])
    if command == "gpu-check":  # a GPU host: onnxruntime-gpu in .venv-gpu, GPU tests, a report
        return run_foreground([sys.executable, ROOT / "loadtest" / "gpu_check.py", *rest])
    if command == "bench":
        ensure_env("cpu,test,load", with_torch=False)
        return run_foreground([PY, "loadtest/bench.py", *rest])
    print(__doc__)
    return 0 if command == "help" else 2


if __name__ == "__main__":
    try:
        raise SystemExit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C while setting up .venv (pip): stop without a traceback
        print("dev.py: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
