"""wrk runs whose bodies file names each request's path, and the service started to take them.

Each line of a bodies file is ``<path> <body>`` (binary bodies hex-encoded): one run can rotate
over several routes (the members of a group, the versions of a table). The summary line wrk
prints is bench.py's, so the benches report alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtest.bench import LUA as BENCH_LUA
from loadtest.bench_servers import Server, pinned

OCTET = "application/octet-stream"

LUA = r"""
local requests_ = {}
local binary = os.getenv("BENCH_BINARY") == "1"
for line in io.lines(os.getenv("BENCH_BODIES")) do
  local path, body = line:match("^(%S+) (.*)$")
  if binary then
    body = (body:gsub("..", function(cc) return string.char(tonumber(cc, 16)) end))
  end
  requests_[#requests_ + 1] = {path, body}
end
local i = 0
local headers = {["Content-Type"] = os.getenv("BENCH_CTYPE"), ["Accept"] = os.getenv("BENCH_ACCEPT")}
request = function()
  i = i % #requests_ + 1
  return wrk.format("POST", requests_[i][1], headers, requests_[i][2])
end
""" + BENCH_LUA[BENCH_LUA.index("done = function") :]


def run(
    port: int, bodies: Path, binary: bool, connections: int, seconds: float, core: str | None
) -> dict[str, float]:
    """One wrk run over ``bodies``: requests, duration, errors, p50/p99 (us) and ``rps``."""
    script = bodies.parent / "wrk_runs.lua"
    script.write_text(LUA)
    media = OCTET if binary else "application/json"
    env = {
        **os.environ,
        "BENCH_BODIES": str(bodies),
        "BENCH_BINARY": "1" if binary else "0",
        "BENCH_CTYPE": media,
        "BENCH_ACCEPT": media,
    }
    # One thread: two would start at the same line and send every body twice.
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
    command += ["--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}"]
    done = subprocess.run(pinned(core, command), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr[-500:]}")
    summary = next(line for line in done.stdout.splitlines() if line.startswith("BENCH "))
    result: dict[str, float] = json.loads(summary.removeprefix("BENCH "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def start_service(repo: Path, root: Path, core: str | None, extra: Sequence[str] = ()) -> Server:
    """The service of checkout ``root`` over ``repo`` (``extra``: more ``serve`` options),
    started (pinned to ``core``) and ready."""
    command = [sys.executable, "-m", "service", "serve", "--models", str(repo)]
    command += ["--port", "{port}", "--log-level", "warning", *extra]
    server = Server("service", command, {"PYTHONPATH": str(root)}, cwd=root)
    server.start(core)
    return server


def parser(description: str | None) -> argparse.ArgumentParser:
    """A bench's argument parser: its docstring as help, and ``--service-root``."""
    made = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root = Path(__file__).resolve().parent.parent
    made.add_argument(
        "--service-root", type=Path, default=root, help="checkout to run the service from"
    )
    return made


def cores() -> tuple[str | None, str | None]:
    """The server's core and wrk's ("0" and "1" where there are two); stops without wrk."""
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    return ("0", "1") if (os.cpu_count() or 1) >= 2 else (None, None)
