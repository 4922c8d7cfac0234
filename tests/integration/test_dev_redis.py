"""``python3 dev.py redis`` as a newcomer meets it: the demo served from Redis answers the
README's sequences example as the file demo does (same options), and Ctrl-C in the terminal
(SIGINT to the whole foreground group) drains the service, then stops Redis, with no error."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from service.dev_redis import redis_demo_options
from service.redis_local import INSTALL_HINT
from service.repository.demo import DEMO_OPTIONS
from tests.support.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_redis_demo_has_the_file_demo_options() -> None:
    options = redis_demo_options("redis://127.0.0.1:7000")
    assert options.startswith(DEMO_OPTIONS) and 'redis = "redis://127.0.0.1:7000"' in options
    compose_demo = (ROOT / "deploy" / "compose" / "redis-models" / "demo.toml").read_text()
    assert "mask_zero = true" in compose_demo


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/readyz", timeout=1).json().get("status") == "ready":
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(log.read_text())


def test_ctrl_c_stops_quietly_and_the_sequences_example_matches(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "service.dev_redis", "--single", "--port", str(port)]
    log_path = tmp_path / "dev-redis.log"
    # A group of its own, as a terminal's foreground job: Ctrl-C is SIGINT to the whole group.
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT, process_group=0
        )
    redis_pids: list[str] = []
    try:
        _wait_until_ready(process, url, log_path)
        answer = httpx.post(
            f"{url}/v1/tables/demo/sequences",
            json={"sequences": [[5, 0, 2], [7], []], "max_length": 2},
            timeout=30,
        ).json()
        # README, "Routes": the file demo's answer (mask_zero: id 0 is masked).
        assert answer["mask"] == [[True, False], [True, False], [False, False]]
        assert answer["lengths"] == [2, 1, 0]
        redis_pids = subprocess.run(
            ["pgrep", "-P", str(process.pid), "-x", "redis-server"], capture_output=True, text=True
        ).stdout.split()
        assert redis_pids
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:  # failed before it stopped: no process left behind
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            for pid in redis_pids:  # in sessions of their own
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    log = log_path.read_text()
    assert process.returncode == 0, log
    assert "ERROR" not in log and "Traceback" not in log, log
    # The terminal's SIGINT never reached Redis (its own session): stopped after the service.
    for redis_log in (tmp_path / ".dev-redis" / "redis").rglob("redis.log"):
        assert "SIGINT" not in redis_log.read_text(), redis_log.read_text()
    for pid in redis_pids:  # stopped by dev_redis after the service, not left running
        assert not Path(f"/proc/{pid}").exists(), log
