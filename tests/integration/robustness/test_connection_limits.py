"""Request-head limits against a real server, with raw sockets (HTTP clients refuse to
send these): heads over the size limit, heads that trickle in (slowloris), and more
connections than a worker takes. Deadlines are generous; no test times the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy

HEAD_LIMIT = 8192
HEAD_TIMEOUT = 2  # seconds; the server's setting in this module
DEADLINE = 60.0  # how long the tests wait for the server to act, at most


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("limits") / "models"
    write_npy(folder, "plain", random_table(100, 4))
    args = ("--max-head-bytes", str(HEAD_LIMIT), "--head-timeout-seconds", str(HEAD_TIMEOUT))
    with ServerProcess(folder, *args, "--max-connections", "400") as server:
        server.wait_ready()
        yield server


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _read_until_closed(sock: socket.socket, deadline: float = DEADLINE) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline)."""
    sock.settimeout(deadline)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _send_huge_header(port: int, size: int) -> bytes:
    """Send a head with one ``size``-byte header in 64 KiB pieces until the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        piece = b"a" * 65536
        sent = 0
        with contextlib.suppress(OSError):  # the server closes while we still send
            while sent < size:
                sock.sendall(piece)
                sent += len(piece)
            sock.sendall(b"\r\n\r\n")
        return _read_until_closed(sock)


def _error_of(reply: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_head_over_the_limit_gets_431_then_close(limited: ServerProcess) -> None:
    status, headers, body = _error_of(_send_huge_header(limited.port, 10 * 2**20))
    assert status == 431 and headers["connection"] == "close"
    assert body["error"]["code"] == "headers_too_large"
    # A head over the limit that arrives in one read is refused too.
    with socket.create_connection(("127.0.0.1", limited.port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert _error_of(_read_until_closed(sock))[0] == 431
    # Just under the limit is fine.
    ok = httpx.get(limited.url + "/healthz", headers={"X-Big": "a" * (HEAD_LIMIT - 512)})
    assert ok.status_code == 200


def test_header_flood_does_not_grow_memory(limited: ServerProcess) -> None:
    """50 heads of 10 MB: each cut off at the limit, so memory stays flat (was +566 MB)."""
    before = _rss_bytes(limited.process.pid)
    for _ in range(50):
        assert _send_huge_header(limited.port, 10 * 2**20).startswith(b"HTTP/1.1 431")
    assert _rss_bytes(limited.process.pid) - before < 100 * 2**20
    assert httpx.get(limited.url + "/healthz").status_code == 200


async def _dribble(port: int, stop_at: float, first: bytes = b"", every: float = 1.0) -> bool:
    """Send a request head one byte per ``every`` seconds; True once the server closed on us."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 500
    try:
        if first:
            writer.write(first)
            await reader.readuntil(b'{"status":"ok"}')
        for byte in head:
            writer.write(bytes([byte]))
            with contextlib.suppress(asyncio.TimeoutError):
                if await asyncio.wait_for(reader.read(1024), every) == b"":
                    return True  # closed by the server
            if time.monotonic() > stop_at:
                return False
        return False
    except (ConnectionError, asyncio.IncompleteReadError):
        return True
    finally:
        writer.transport.abort()


def test_slowloris_connections_are_closed(limited: ServerProcess) -> None:
    """300 connections sending their head a byte at a time are all closed by the server."""

    async def run() -> list[bool]:
        stop_at = time.monotonic() + DEADLINE
        return await asyncio.gather(*(_dribble(limited.port, stop_at) for _ in range(300)))

    closed = asyncio.run(run())
    assert all(closed), f"{closed.count(False)} of 300 slow heads were still open"
    assert httpx.get(limited.url + "/healthz").status_code == 200


def test_slowloris_closed_with_the_default_timeout(tmp_path: Path) -> None:
    """The issue's attack on default settings: 300 heads, a byte every 5 s, all closed."""
    folder = tmp_path / "models"
    write_npy(folder, "plain", random_table(10, 4))
    with ServerProcess(folder) as server:
        server.wait_ready()

        async def run() -> list[bool]:
            stop_at = time.monotonic() + DEADLINE
            return await asyncio.gather(
                *(_dribble(server.port, stop_at, every=5.0) for _ in range(300))
            )

        closed = asyncio.run(run())
        assert all(closed), f"{closed.count(False)} of 300 slow heads were still open"
        assert httpx.get(server.url + "/healthz").status_code == 200


def test_head_clock_restarts_after_each_response(limited: ServerProcess) -> None:
    """On a keep-alive connection the next head is timed from the end of the response."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    assert asyncio.run(_dribble(limited.port, time.monotonic() + DEADLINE, first=request))


def test_pipelined_requests_and_large_bodies_still_served(limited: ServerProcess) -> None:
    """Counting head bytes must not count bodies or a second pipelined request."""
    body = json.dumps({"ids": [1] * 200_000}).encode()  # ~600 KB, far over the head limit
    with socket.create_connection(("127.0.0.1", limited.port), timeout=DEADLINE) as sock:
        request = (
            b"POST /v1/tables/plain/lookup HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        sock.sendall(request + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 413")  # over max_ids: the ids limit, not the head's
    assert reply.count(b"HTTP/1.1 ") == 2 and b'{"status":"ok"}' in reply


def test_connections_over_the_cap_get_503(tmp_path: Path) -> None:
    """Past max_connections a new connection is told 503 overloaded + Retry-After, closed."""
    folder = tmp_path / "models"
    write_npy(folder, "plain", random_table(10, 4))
    with ServerProcess(
        folder, "--max-connections", "20", "--head-timeout-seconds", "120"
    ) as server:
        server.wait_ready()
        # Opened in order, accepted in order: the first 20 are held (a head in progress,
        # so neither timer closes them), the last 5 are over the cap.
        socks = [
            socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
            for _ in range(25)
        ]
        try:
            for sock in socks:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            for sock in socks[20:]:
                status, headers, body = _error_of(_read_until_closed(sock))
                assert status == 503 and headers["retry-after"] == "1"
                assert body["error"]["code"] == "overloaded"
            for sock in socks[:20]:
                sock.sendall(b"Connection: close\r\n\r\n")
                assert _read_until_closed(sock).startswith(b"HTTP/1.1 200")
        finally:
            for sock in socks:
                sock.close()
        deadline = time.monotonic() + DEADLINE
        while httpx.get(server.url + "/healthz").status_code != 200:  # capacity comes back
            assert time.monotonic() < deadline
            time.sleep(0.1)
