"""Real redis-server processes for the tests; a missing binary FAILS (never skips) the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from service import redis_local
from service.redis_local import INSTALL_HINT, RedisNotInstalled
from tests.support.polling import wait_until


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


@contextmanager
def replicated_pair(folder: Path, timeout: float = 120) -> Iterator[tuple[RedisNode, RedisNode]]:
    """A master and its replica (two servers, ``REPLICAOF``), the link up; both stopped after."""
    master, replica = RedisNode(folder / "master"), RedisNode(folder / "replica")
    try:
        replica.client().replicaof("127.0.0.1", master.port)
        wait_until(
            lambda: replica.client().info("replication").get("master_link_status") == "up",
            "the replica's link to its master",
            timeout=timeout,
        )
        yield master, replica
    finally:
        replica.stop()
        master.stop()


def replicas_of(nodes: Sequence[redis_local.RedisNode]) -> list[redis_local.RedisNode]:
    """The nodes that are replicas now."""
    return [node for node in nodes if node.client().info("replication")["role"] == "slave"]


@contextmanager
def paused(nodes: Sequence[redis_local.RedisNode]) -> Iterator[None]:
    """``nodes`` stopped (``SIGSTOP``): connected, answering nothing, until the block ends."""
    pids = [node.process.pid for node in nodes if node.process is not None]
    assert len(pids) == len(nodes), "a node without a process of its own"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
