"""Servers under benchmark: started pinned, probed until ready, measured from /proc."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cores: str | None, command: list[str]) -> list[str]:
    """``command`` run under ``taskset -c cores`` where both exist."""
    if cores and shutil.which("taskset"):
        return ["taskset", "-c", cores, *command]
    return command


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn workers, taskset's child)."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the process may have exited meanwhile
                queue += [int(child) for child in task.read_text().split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of the live process tree under ``pid``, in seconds."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


@dataclass
class Server:
    """One server process: its command (``{port}`` filled in), environment and readiness path."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    cwd: Path | None = None
    has_metrics: bool = True
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, cores: str | None) -> None:
        """Start and wait (up to 120 s) until the readiness path answers below 500."""
        self.port = free_port()
        cmd = [part.replace("{port}", str(self.port)) for part in self.command]
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            pinned(cores, cmd),
            env=env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=2)
                if r.status_code < 500:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start: {' '.join(cmd)}")

    def memory_mib(self) -> tuple[float, float]:
        """RSS and PSS of the server's process tree, in MiB (PSS counts shared pages once)."""
        rss = pss = 0
        for pid in process_tree(self.pid):
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except OSError:
                pass
        return rss / 1024, pss / 1024

    def stop(self) -> None:
        """Terminate (then kill after 10 s) the server."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
