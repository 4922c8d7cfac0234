"""One service however many worker processes: coherent reloads, summed metrics, lossless drain.

Every test runs a real ``serve --workers 2``. Progress is polled with generous deadlines;
nothing here asserts a duration.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from service.tables.worker_state import PeerState, read_peers
from tests.support.polling import wait_until
from tests.support.server_process import ServerProcess, every_worker_serves
from tests.support.server_process import wait_for_workers as wait_for_peers

ROWS, DIM = 200, 8
ADMIN = {"Authorization": "Bearer adm"}
DEADLINE = 60.0


def write_version(folder: Path, version: int) -> None:
    """Every value is the version number; replaced atomically, as the README says to deploy."""
    np.save(folder / ".next.npy", np.full((ROWS, DIM), float(version), np.float32))
    os.replace(folder / ".next.npy", folder / "t.npy")


def start(tmp_path: Path, workers: int = 2, env: dict[str, str] | None = None) -> ServerProcess:
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    if not any(folder.iterdir()):
        write_version(folder, 1)
    run_dir = tmp_path / "run"
    server = ServerProcess(
        folder,
        "--workers",
        str(workers),
        env={"EMBED_RUN_DIR": str(run_dir), "EMBED_ADMIN_KEY": "adm", **(env or {})},
    )
    server.run_dir = run_dir  # type: ignore[attr-defined]
    server.wait_ready(DEADLINE)
    wait_for_workers(server, every_worker_serves("t", workers))
    return server


def wait_for_workers(
    server: ServerProcess, done: Callable[[list[PeerState]], bool]
) -> list[PeerState]:
    """Poll the workers' published state until ``done`` holds for it."""
    return wait_for_peers(server, server.run_dir, done, DEADLINE)  # type: ignore[attr-defined]


def fresh_lookup(server: ServerProcess) -> float:
    """One lookup on a new connection (so any worker may answer); the version it shows."""
    response = httpx.post(
        server.url + "/v1/tables/t/lookup",
        json={"ids": [0, 7, ROWS - 1]},
        headers={"Connection": "close"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    values = np.unique(np.array(response.json()["vectors"], np.float32))
    assert values.size == 1, f"a response mixes versions: {values}"
    return float(values[0])


def assert_all_fresh_connections_answer(server: ServerProcess, version: float) -> None:
    seen = [fresh_lookup(server) for _ in range(200)]
    assert seen == [version] * 200, {v: seen.count(v) for v in set(seen)}


def served_versions(peers: list[PeerState]) -> set[str]:
    return {peer.tables.get("t", "") for peer in peers}


def test_admin_reload_answers_once_every_worker_serves_it(tmp_path: Path) -> None:
    server = start(tmp_path, env={"EMBED_RELOAD_WATCH_FILES": "false"})
    with server:
        write_version(tmp_path / "models", 2)
        response = httpx.post(server.url + "/v1/admin/tables/t/reload", headers=ADMIN, timeout=90)
        assert response.status_code == 200, response.text
        assert_all_fresh_connections_answer(server, 2.0)  # no waiting: 200 means every worker


@pytest.mark.parametrize("trigger", ["sighup", "replaced-file"])
def test_sighup_and_replaced_file_reach_every_worker(tmp_path: Path, trigger: str) -> None:
    """SIGHUP (file watching off, so only the signal can do it), or the watcher alone."""
    env = (
        {"EMBED_RELOAD_WATCH_FILES": "false"}
        if trigger == "sighup"
        else {"EMBED_RELOAD_POLL_SECONDS": "0.2"}
    )
    server = start(tmp_path, env=env)
    with server:
        before = served_versions(read_peers(server.run_dir))  # type: ignore[attr-defined]
        write_version(tmp_path / "models", 2)
        if trigger == "sighup":
            os.kill(server.process.pid, signal.SIGHUP)
        wait_for_workers(
            server,
            lambda peers: (
                len(peers) == 2
                and len(served_versions(peers)) == 1
                and served_versions(peers) != before
            ),
        )
        assert_all_fresh_connections_answer(server, 2.0)


def test_admin_reload_never_claims_a_worker_that_did_not_confirm(tmp_path: Path) -> None:
    server = start(
        tmp_path, env={"EMBED_RELOAD_WATCH_FILES": "false", "EMBED_RELOAD_WAIT_SECONDS": "2"}
    )
    with server:
        stopped = read_peers(server.run_dir)[0].pid  # type: ignore[attr-defined]
        os.kill(
            stopped, signal.SIGSTOP
        )  # alive but answering nothing: new connections go to the other
        try:
            write_version(tmp_path / "models", 2)
            response = httpx.post(
                server.url + "/v1/admin/tables/t/reload", headers=ADMIN, timeout=90
            )
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "reload_incomplete" and str(stopped) in error["message"]
        finally:
            os.kill(stopped, signal.SIGCONT)
        # The request stands: the stopped worker reloads once it runs again (or, if the
        # supervisor meanwhile replaced it as hung, its replacement loads the new file).
        wait_for_workers(server, lambda peers: len(served_versions(peers)) == 1)
        assert_all_fresh_connections_answer(server, 2.0)


def _sample(text: str, name: str, labels: str) -> float:
    prefix = f"{name}{{{labels}}} "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"{prefix} missing from:\n{text[:3000]}"
    return float(lines[0][len(prefix) :])


@pytest.mark.parametrize("workers", [2, 1])
def test_metrics_sum_every_worker_whichever_answers(tmp_path: Path, workers: int) -> None:
    server = start(tmp_path, workers)
    with server:
        requests = 150
        for _ in range(requests):
            fresh_lookup(server)
        labels = 'route="lookup",status="200",table="t"'

        def scrape() -> str:  # on a fresh connection: any worker answers it
            return httpx.get(
                server.url + "/metrics", headers={"Connection": "close"}, timeout=30
            ).text

        # Each worker writes its request metrics within metrics.FLUSH_SECONDS.
        wait_until(
            lambda: _sample(scrape(), "embedding_requests_total", labels) == requests,
            "every worker's request counts in a scrape",
        )
        for _ in range(20):
            text = scrape()
            assert _sample(text, "embedding_requests_total", labels) == requests
            assert _sample(text, "embedding_request_seconds_count", labels) == requests
            assert (
                _sample(
                    text,
                    "embedding_request_seconds_bucket",
                    labels.replace("route=", 'le="+Inf",route='),
                )
                == requests
            )
            assert re.search(rf"^embedding_workers {workers}\.0$", text, re.M), text[:2000]


async def _start_large_responses(
    port: int, count: int, ids: list[np.ndarray]
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter, int]]:
    """Send ``count`` lookups of many ids asking for binary; return once every response started."""
    started = []
    for request_ids in ids[:count]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = orjson.dumps({"ids": request_ids.tolist()})
        writer.write(
            b"POST /v1/tables/t/lookup HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Accept: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        started.append((reader, writer))
    heads = []
    for reader, _ in started:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        heads.append(length)
    return [(r, w, n) for (r, w), n in zip(started, heads, strict=True)]


def _big_table(folder: Path) -> np.ndarray:
    table = np.random.default_rng(5).standard_normal((1000, 16)).astype(np.float32)
    np.save(folder / "t.npy", table)
    return table


def test_sigterm_with_large_bodies_in_flight_completes_every_one(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    table = _big_table(tmp_path / "models")
    # No ids-in-flight budget: all 12 bodies (1.2M ids) must be in flight at SIGTERM.
    server = start(tmp_path, env={"EMBED_DRAIN_SECONDS": "300", "EMBED_MAX_IDS_IN_FLIGHT": "0"})
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, 1000, 100_000) for _ in range(12)]

    async def run() -> list[bytes]:
        responses = await _start_large_responses(server.port, len(ids), ids)
        server.process.send_signal(signal.SIGTERM)  # every body is still mostly unsent
        bodies = []
        for reader, writer, length in responses:
            bodies.append(await asyncio.wait_for(reader.readexactly(length), DEADLINE))
            writer.close()
        return bodies

    with server:
        bodies = asyncio.run(run())
        assert server.process.wait(DEADLINE) == 0, server.log()
    for request_ids, body in zip(ids, bodies, strict=True):
        assert body == table[request_ids].tobytes()  # complete and exact
    assert "cut" not in server.log_path.read_text()


def test_drain_timeout_cuts_and_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    _big_table(tmp_path / "models")
    server = start(tmp_path, env={"EMBED_DRAIN_SECONDS": "1"})
    ids = [np.arange(100_000) % 1000]

    async def run() -> None:
        responses = await _start_large_responses(server.port, 1, ids)
        server.process.send_signal(signal.SIGTERM)  # and never read the 6.4 MB body
        exit_code = await asyncio.to_thread(server.process.wait, DEADLINE)
        assert exit_code != 0, server.log()
        responses[0][1].close()

    with server:
        asyncio.run(run())
        log = server.log()
    assert re.search(r"drain timeout exceeded \(1 s\): 1 in-flight request\(s\) cut", log), log


def test_readyz_answers_503_draining_during_a_drain(tmp_path: Path) -> None:
    server = start(tmp_path, env={"EMBED_DRAIN_DELAY_SECONDS": "600"})
    with server:
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DEADLINE
        draining = 0
        while draining < 20:  # 20 fresh connections in a row: both workers drain
            response = httpx.get(server.url + "/readyz", headers={"Connection": "close"})
            if response.status_code == 503:
                assert response.json()["status"] == "draining"
                draining += 1
            else:
                draining = 0
            assert time.monotonic() < deadline, response.text
        assert fresh_lookup(server) == 1.0  # still serving while the delay lasts
        assert httpx.get(server.url + "/healthz").status_code == 200  # liveness stays
        server.process.send_signal(signal.SIGTERM)  # a second SIGTERM ends the delay
        assert server.process.wait(DEADLINE) == 0, server.log()


@pytest.mark.parametrize("warm_up", ["true", "false"])
def test_readyz_is_503_until_every_table_is_loaded(tmp_path: Path, warm_up: str) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    names = [f"t{i}" for i in range(6)]
    for name in names:
        np.save(folder / f"{name}.npy", np.ones((50_000, 64), np.float32))
    run_dir = tmp_path / "run"
    env = {"EMBED_RUN_DIR": str(run_dir), "EMBED_WARM_UP": warm_up}
    with ServerProcess(folder, "--workers", "2", env=env) as server:
        deadline = time.monotonic() + DEADLINE
        ready = 0
        while ready < 20:
            try:
                response = httpx.get(server.url + "/readyz", headers={"Connection": "close"})
            except httpx.TransportError:
                assert time.monotonic() < deadline, server.log()
                continue
            body = response.json()
            if body["status"] == "ready":  # ready means every table, never fewer
                assert response.status_code == 200 and body["tables"] == names, body
                ready += 1
            else:
                assert response.status_code == 503 and body["status"] == "loading", body
                ready = 0
            assert time.monotonic() < deadline, server.log()
        assert httpx.get(server.url + "/healthz").status_code == 200
