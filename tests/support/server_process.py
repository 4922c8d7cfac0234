"""A real ``embedding-service serve`` process on a free port, readiness polled with a deadline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from service.tables.worker_state import PeerState, read_peers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """Starts the service as a subprocess; ``url`` is its base address once ready."""

    def __init__(
        self,
        models: Path,
        *args: str,
        env: dict[str, str] | None = None,
        module: str = "service",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = models.parent / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
        clean_env.update(env or {})
        if module == "service":
            command = [
                "-m",
                "service",
                "serve",
                "--models",
                str(models),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *args,
            ]
        else:  # a test server module: settings through the environment
            clean_env.setdefault("EMBED_MODELS", str(models))
            clean_env.setdefault("EMBED_LOG_LEVEL", "warning")
            command = ["-m", module, "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            [sys.executable, *command],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=clean_env,
            cwd=Path(__file__).resolve().parents[2],
        )

    def wait_ready(
        self, timeout: float = 120.0, expect: str = "ready", headers: dict | None = None
    ) -> dict:
        """Poll ``/readyz`` until its status is ``expect`` (or loading ends), within ``timeout``."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(self.url + "/readyz", timeout=1.0, headers=headers)
                last = response.json()
                if (
                    last.get("status") in (expect, "degraded", "ready")
                    and last["status"] != "loading"
                ):
                    return last
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(f"server not ready within {timeout}s (last: {last}):\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_for_workers(
    server: ServerProcess,
    run_dir: Path,
    done: Callable[[list[PeerState]], bool],
    timeout: float = 60.0,
) -> list[PeerState]:
    """Poll the workers' published state (``EMBED_RUN_DIR``) until ``done`` holds for it."""
    deadline = time.monotonic() + timeout
    while True:
        peers = read_peers(run_dir)
        if done(peers):
            return peers
        assert time.monotonic() < deadline, f"workers never got there: {peers}\n{server.log()}"
        time.sleep(0.05)


def every_worker_serves(table: str, workers: int) -> Callable[[list[PeerState]], bool]:
    """``done`` for :func:`wait_for_workers`: ``workers`` workers, each serving ``table`` (a
    starting worker publishes itself before it has loaded its tables)."""
    return lambda peers: len(peers) == workers and all(peer.tables.get(table) for peer in peers)
