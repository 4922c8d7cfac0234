"""Real redis-server processes for the tests; a missing binary FAILS (never skips) the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service import redis_local
from service.redis_local import INSTALL_HINT, RedisNotInstalled


class RedisNode(redis_local.RedisNode):
    """``service.redis_local.RedisNode``; a missing redis-server fails the test."""

    def __init__(
        self,
        folder: Path,
        cluster: bool = False,
        port: int | None = None,
        password: str | None = None,
    ) -> None:
        try:
            super().__init__(folder, cluster, port, password)
        except RedisNotInstalled:
            pytest.fail(INSTALL_HINT)


class RedisCluster(redis_local.RedisCluster):
    """``service.redis_local.RedisCluster``; a missing redis-server fails the test."""

    def __init__(self, folder: Path) -> None:
        try:
            super().__init__(folder)
        except RedisNotInstalled:
            pytest.fail(INSTALL_HINT)


def push_cli(*args: str, timeout: float = 300) -> str:
    """Run ``embedding-service push ARGS`` as a user would; its stdout (the version)."""
    result = subprocess.run(
        [sys.executable, "-m", "service", "push", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, f"push failed ({result.returncode}):\n{result.stderr}"
    return result.stdout.strip()


def redis_table_toml(url: str, extra: str = "") -> str:
    """The options file of a Redis table (no weights file beside it)."""
    return f'redis = "{url}"\n{extra}'
