"""SIGTERM with a burst of connections in every state: nothing the server accepted is lost.

At the moment of the signal the server holds idle keep-alive connections, connections with
half a request head read (a first request, or the next one on a keep-alive connection), one
with its head read and half its body, and ones whose whole request was sent just before the
signal. The idle ones must close at once (the drain does not wait for them); every other one
must get its complete, exact response with ``Connection: close``, even when the rest of its
request arrives only after the idle connections were closed; the server exits 0.

Nothing is timed: the test reads the server's side of each connection from /proc (accepted?
everything sent read into the server's parser?) before it signals, and orders the steps on
what it observes (the idle connections' EOF) after.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.support.polling import until
from tests.support.server_process import ServerProcess, every_worker_serves, wait_for_workers
from tests.support.server_sockets import server_sides

ROWS, DIM = 1000, 16
PER_KIND = 8
DEADLINE = 60.0
# Kinds whose request is only partly sent before SIGTERM, and where the first part ends.
HEAD_PART = b"POST /v1/tables/t/lookup HTTP/1.1\r\nHost: t\r\nContent-"


def lookup_request(ids: np.ndarray) -> bytes:
    body = orjson.dumps({"ids": ids.tolist()})
    return (
        b"POST /v1/tables/t/lookup HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Accept: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


@dataclass
class Client:
    """One test connection and the request it is to get answered across the SIGTERM."""

    kind: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ids: np.ndarray
    request: bytes = b""
    sent: int = 0
    outcome: str = field(default="pending")

    @property
    def port(self) -> int:
        return int(self.writer.get_extra_info("sockname")[1])

    def send(self, upto: int) -> None:
        self.writer.write(self.request[self.sent : upto])
        self.sent = upto


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    assert match, head
    return head, await asyncio.wait_for(reader.readexactly(int(match.group(1))), DEADLINE)


async def warm_up(client: Client, table: np.ndarray, rng: np.random.Generator) -> None:
    """One request answered on the connection: it is accepted, and kept alive after."""
    ids = rng.integers(0, ROWS, 50)
    client.writer.write(lookup_request(ids))
    head, body = await read_response(client.reader)
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower(), head
    assert body == table[ids].tobytes()


async def open_client(port: int, kind: str, rng: np.random.Generator, table: np.ndarray) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = Client(kind, reader, writer, rng.integers(0, ROWS, 2000))
    client.request = lookup_request(client.ids)
    if kind in ("idle", "partial_next"):
        await warm_up(client, table, rng)
    if kind in ("partial_first", "partial_next"):
        client.send(len(HEAD_PART))  # half a head
    elif kind == "partial_body":
        client.send(client.request.index(b"\r\n\r\n") + 4 + 100)  # the head and part of the body
    return client


async def open_idle_on_every_worker(
    server: ServerProcess, workers: int, rng: np.random.Generator, table: np.ndarray
) -> list[Client]:
    """Idle keep-alive connections, at least ``PER_KIND`` and at least one in every worker, so
    their EOF after SIGTERM shows that every worker has begun closing connections."""
    idle: list[Client] = []
    deadline = time.monotonic() + DEADLINE
    while True:
        idle.append(await open_client(server.port, "idle", rng, table))
        sides = server_sides(server.port, server.process.pid, [c.port for c in idle])
        if len(idle) >= PER_KIND and len({side.owner for side in sides.values()}) >= workers:
            return idle
        assert time.monotonic() < deadline, f"idle connections never reached {workers} workers"


async def finish(client: Client, table: np.ndarray) -> None:
    """Send what is left of the request; record whether its response came back whole and exact."""
    try:
        client.send(len(client.request))
        await client.writer.drain()
        head, body = await read_response(client.reader)
        closed = await asyncio.wait_for(client.reader.read(1), DEADLINE) == b""
    except (OSError, asyncio.IncompleteReadError) as exc:
        client.outcome = f"lost ({type(exc).__name__})"
        return
    if not head.startswith(b"HTTP/1.1 200"):
        client.outcome = f"status {head[:40]!r}"
    elif body != table[client.ids].tobytes():
        client.outcome = "wrong body"
    elif not closed:
        client.outcome = "kept open after its response"
    elif client.kind != "whole" and b"\r\nconnection: close" not in head.lower():
        # Its response began after the drain did: it must say so. (A whole request may have
        # been answered before the server saw the signal; its connection closes after anyway.)
        client.outcome = "no Connection: close"
    else:
        client.outcome = "exact"


def all_accepted_and_read(server: ServerProcess, clients: list[Client], workers: int) -> bool:
    """Every connection accepted by a worker, and everything sent on it read by that worker."""
    sides = server_sides(server.port, server.process.pid, [c.port for c in clients])
    if len(sides) < len(clients) or any(side.unread for side in sides.values()):
        return False
    owners = {side.owner for side in sides.values()}
    return None not in owners and (workers == 1 or server.process.pid not in owners)


async def burst_at_sigterm(server: ServerProcess, table: np.ndarray, workers: int) -> list[Client]:
    rng = np.random.default_rng(7)
    kinds = ("partial_first", "partial_next", "partial_body", "whole")
    busy = [
        await open_client(server.port, kind, rng, table) for kind in kinds for _ in range(PER_KIND)
    ]
    idle = await open_idle_on_every_worker(server, workers, rng, table)
    await until(
        lambda: all_accepted_and_read(server, busy + idle, workers),
        "the server to accept every connection and read what was sent",
    )
    for client in busy:
        if client.kind == "whole":
            client.send(len(client.request))  # whole, just before the signal
    server.process.send_signal(signal.SIGTERM)
    for client in idle:  # closed at once: the drain does not wait for idle connections
        assert await asyncio.wait_for(client.reader.read(1), DEADLINE) == b""
        client.outcome = "closed"
    # The busy connections hold the drain open: the server is still there, and only now do
    # the partly sent requests get their remaining bytes.
    assert server.process.poll() is None, server.log()
    await asyncio.gather(*(finish(client, table) for client in busy))
    for client in busy + idle:
        client.writer.close()
    return busy


@pytest.mark.parametrize("workers", [1, 2])
def test_burst_at_sigterm_answers_every_accepted_request(tmp_path: Path, workers: int) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    table = np.random.default_rng(3).standard_normal((ROWS, DIM)).astype(np.float32)
    np.save(folder / "t.npy", table)
    env = {
        "EMBED_DRAIN_SECONDS": "300",  # the test's own deadlines fail first if something hangs
        "EMBED_HEAD_TIMEOUT_SECONDS": "300",  # no partial head is closed for being slow
        "EMBED_RUN_DIR": str(tmp_path / "run"),
    }
    with ServerProcess(folder, "--workers", str(workers), env=env) as server:
        server.wait_ready(DEADLINE)
        wait_for_workers(server, tmp_path / "run", every_worker_serves("t", workers), DEADLINE)
        busy = asyncio.run(burst_at_sigterm(server, table, workers))
        exit_code = server.process.wait(DEADLINE)
        log = server.log()
    outcomes: dict[str, dict[str, int]] = {}
    for client in busy:
        kind = outcomes.setdefault(client.kind, {})
        kind[client.outcome] = kind.get(client.outcome, 0) + 1
    assert all(set(kind) == {"exact"} for kind in outcomes.values()), outcomes
    assert exit_code == 0, log
    assert "cut" not in log, log


def test_head_unfinished_at_the_drain_timeout_is_cut_and_exits_non_zero(tmp_path: Path) -> None:
    """A partial head that the client never completes holds the drain only until the drain
    timeout; then it counts as cut (its request was received in part, never answered)."""
    folder = tmp_path / "models"
    folder.mkdir()
    np.save(folder / "t.npy", np.zeros((ROWS, DIM), np.float32))
    env = {"EMBED_DRAIN_SECONDS": "1", "EMBED_HEAD_TIMEOUT_SECONDS": "300"}

    async def run(server: ServerProcess) -> int:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(HEAD_PART)
        port = writer.get_extra_info("sockname")[1]

        def read_by_the_server() -> bool:
            side = server_sides(server.port, server.process.pid, [port]).get(port)
            return side is not None and side.owner is not None and side.unread == 0

        await until(read_by_the_server, "the server to read the partial head")
        server.process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(server.process.wait, DEADLINE)
        writer.close()
        return exit_code

    with ServerProcess(folder, env=env) as server:
        server.wait_ready(DEADLINE)
        exit_code = asyncio.run(run(server))
        log = server.log()
    assert exit_code == 3, log
    assert re.search(r"drain timeout exceeded \(1 s\): 1 in-flight request\(s\) cut", log), log
