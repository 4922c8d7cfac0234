"""Faults of the store, with real redis-server processes: only exact 200s or 503s.

Every response of a Redis table is either the exact rows (200) or ``503
backend_unavailable`` with ``Retry-After`` -- never a zero row, never another
version -- while the store times out, fails over, reshards, dies, or comes back
empty; health stays 200, other tables serve, and the table recovers by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.redis_servers import RedisCluster, RedisNode, push_cli, redis_table_toml
from tests.support.server_process import ServerProcess, free_port
from tests.support.tables import random_table, write_npy

ROWS, DIM = 2000, 16
DEADLINE_S = 120  # the client's slot refresh after a failover, on a busy 2-core box


def _table(folder: Path) -> tuple[Path, np.ndarray]:
    table = random_table(ROWS, DIM, 21)
    return write_npy(folder, "local", table), table


def _lookup(client: httpx.Client, name: str, ids: list[int]) -> httpx.Response:
    return client.post(
        f"/v1/tables/{name}/lookup",
        content=np.array(ids, dtype=np.int64).tobytes(),
        headers={"content-type": "application/octet-stream", "accept": "application/octet-stream"},
    )


def _check(response: httpx.Response, table: np.ndarray, ids: list[int]) -> str:
    """``ok`` for the exact rows, ``unavailable`` for a proper 503; anything else fails."""
    if response.status_code == 200:
        rows = np.frombuffer(response.content, np.float32).reshape(len(ids), DIM)
        assert np.array_equal(rows, table[ids]), "a 200 with rows other than the table's"
        return "ok"
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "backend_unavailable", response.text
    assert response.headers.get("retry-after"), "503 without Retry-After"
    return "unavailable"


def _wait_for(client: httpx.Client, name: str, table: np.ndarray, want: str) -> None:
    ids = list(range(0, ROWS, 7))
    deadline = time.monotonic() + DEADLINE_S
    seen, body = None, ""
    while time.monotonic() < deadline:
        response = _lookup(client, name, ids)
        seen, body = _check(response, table, ids), response.text[:300]
        if seen == want:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"table {name} did not turn {want} within {DEADLINE_S}s (last {seen}: {body})"
    )


class _Load:
    """Threads sending lookups and checking every answer until stopped."""

    def __init__(self, url: str, name: str, table: np.ndarray, threads: int = 3) -> None:
        self.outcomes: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, name, table, seed))
            for seed in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, name: str, table: np.ndarray, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=url, timeout=30) as client:
            while not self._stop.is_set():
                ids = rng.integers(0, ROWS, 64).tolist()
                try:
                    self.outcomes[_check(_lookup(client, name, ids), table, ids)] += 1
                except BaseException as exc:  # reported by stop()
                    self.errors.append(exc)
                    return

    def stop(self) -> Counter[str]:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        if self.errors:
            raise self.errors[0]
        return self.outcomes


@pytest.fixture
def single(tmp_path: Path) -> Iterator[RedisNode]:
    node = RedisNode(tmp_path / "redis")
    yield node
    node.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    nodes = RedisCluster(tmp_path / "redis")
    yield nodes
    nodes.stop()


def _serve(folder: Path, url: str, extra: str = "cache_rows = 0\n") -> ServerProcess:
    (folder / "remote.toml").write_text(redis_table_toml(url, extra))
    return ServerProcess(folder)


def test_store_down_then_restarted_empty_then_pushed_again(
    tmp_path: Path, single: RedisNode
) -> None:
    folder = tmp_path / "models"
    source, table = _table(folder)
    push_cli(str(source), "--redis", single.url, "--name", "remote")
    with (
        _serve(folder, single.url) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert server.wait_ready()["status"] == "ready", server.log()
        _wait_for(client, "remote", table, "ok")
        single.kill()
        _wait_for(client, "remote", table, "unavailable")
        assert client.get("/healthz").status_code == 200
        assert _check(_lookup(client, "local", [1, 2]), table, [1, 2]) == "ok"
        single.start()  # same port, no data: every row is missing
        _wait_for(client, "remote", table, "unavailable")
        push_cli(str(source), "--redis", single.url, "--name", "remote")
        _wait_for(client, "remote", table, "ok")  # no restart of the service


def test_unreachable_at_start_is_failed_until_it_can_be_read(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    source, table = _table(folder)
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    with _serve(folder, url) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        ready = server.wait_ready()
        assert ready["status"] == "degraded" and "remote" in ready["failed"], ready
        assert "local" in ready["tables"]
        assert client.get("/healthz").status_code == 200
        node = RedisNode(tmp_path / "redis", port=port)
        try:
            push_cli(str(source), "--redis", url, "--name", "remote")
            deadline = time.monotonic() + DEADLINE_S
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, client.get("/readyz").text
                time.sleep(0.2)
            _wait_for(client, "remote", table, "ok")
        finally:
            node.stop()


def test_a_store_that_stops_answering_times_out_as_503(tmp_path: Path, single: RedisNode) -> None:
    folder = tmp_path / "models"
    source, table = _table(folder)
    push_cli(str(source), "--redis", single.url, "--name", "remote")
    extra = "cache_rows = 0\nredis_timeout_ms = 300\n"
    with (
        _serve(folder, single.url, extra) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        server.wait_ready()
        _wait_for(client, "remote", table, "ok")
        assert single.process is not None
        os.kill(single.process.pid, signal.SIGSTOP)
        try:
            _wait_for(client, "remote", table, "unavailable")
            assert _check(_lookup(client, "local", [3]), table, [3]) == "ok"
        finally:
            os.kill(single.process.pid, signal.SIGCONT)
        _wait_for(client, "remote", table, "ok")


def test_a_master_killed_under_load_fails_over(tmp_path: Path, cluster: RedisCluster) -> None:
    folder = tmp_path / "models"
    source, table = _table(folder)
    push_cli(str(source), "--redis", cluster.url, "--name", "remote")
    with _serve(folder, cluster.nodes[0].url) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            _wait_for(client, "remote", table, "ok")
            cluster.wait_replicated()  # else the replica may take over without the rows
            load = _Load(server.url, "remote", table)
            time.sleep(1)
            # The very node the table's URL names: the client must find the others itself.
            victim = (
                cluster.nodes[0] if cluster.nodes[0] in cluster.masters() else cluster.masters()[0]
            )
            victim.kill()
            cluster.wait_failed_over(victim)
            _wait_for(client, "remote", table, "ok")
            time.sleep(1)
            outcomes = load.stop()
    assert outcomes["ok"] > 0, outcomes


def test_resharding_under_load_follows_moved_and_ask(tmp_path: Path, cluster: RedisCluster) -> None:
    folder = tmp_path / "models"
    source, table = _table(folder)
    push_cli(str(source), "--redis", cluster.url, "--name", "remote")
    masters = cluster.masters()
    ids = {m.port: m.client().cluster("MYID") for m in masters}
    with _serve(folder, cluster.url) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            _wait_for(client, "remote", table, "ok")
            load = _Load(server.url, "remote", table)
            reshard = [
                *(cluster.nodes[0].cli, "--cluster", "reshard", f"127.0.0.1:{masters[0].port}"),
                *("--cluster-from", _text(ids[masters[1].port])),
                *("--cluster-to", _text(ids[masters[0].port])),
                *("--cluster-slots", "1500", "--cluster-yes", "--cluster-pipeline", "50"),
            ]
            subprocess.run(
                reshard,
                check=True,
                capture_output=True,
                timeout=300,
            )
            cluster.wait_ok()
            _wait_for(client, "remote", table, "ok")
            outcomes = load.stop()
    assert outcomes["ok"] > 0, outcomes


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_a_password_in_the_url_is_used_and_never_shown(tmp_path: Path) -> None:
    node = RedisNode(tmp_path / "redis", password="s3cret-pw")
    try:
        folder = tmp_path / "models"
        source, table = _table(folder)
        push_cli(str(source), "--redis", node.url, "--name", "remote")
        with (
            _serve(folder, node.url) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            assert server.wait_ready()["status"] == "ready", server.log()
            _wait_for(client, "remote", table, "ok")
            info = client.get("/v1/tables/remote").text
            assert "s3cret-pw" not in info and "s3cret-pw" not in server.log()
        wrong = node.url.replace("s3cret-pw", "wrong")
        with _serve(folder, wrong) as server:
            ready = server.wait_ready()
            assert "remote" in ready["failed"] and "wrong" not in str(ready), ready
    finally:
        node.stop()
