"""The ids-in-flight budget against a real server, on an unbatched table: a flood of large
lookups gets exact answers or ``503 overloaded`` (never a 5xx) while ``/healthz`` answers;
clients that go away mid-answer leave nothing counted. Ordered by state (metrics, which
answers came back), never by timing."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.support.polling import until, wait_until
from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy

ROWS, DIM = 30_000, 32
BUDGET = 60_000
REQUEST_IDS = 25_000  # two fit in the budget, a third does not; ~9 MB of JSON each
FLOOD = 10
LOOKUP = "/v1/tables/t/lookup"
TABLE = random_table(ROWS, DIM, seed=3)


def _metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(url + "/metrics", timeout=60).text
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.M))


def _answered(url: str) -> float:
    """Lookups the server has answered (counted when the answer is ready, before it is sent)."""
    return _metric(url, "embedding_requests_total", 'route="lookup",status="200",table="t"') + (
        _metric(url, "embedding_requests_total", 'route="lookup",status="503",table="t"')
    )


@pytest.fixture(params=[True, False], ids=["raw-asgi-front", "no-raw-asgi-front"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("admission") / "models"
    write_npy(folder, "t", TABLE, "batching = false\n")
    env = {"EMBED_MAX_IDS_IN_FLIGHT": str(BUDGET)}
    if not request.param:
        env["EMBED_RAW_ASGI_FRONT"] = "false"
    with ServerProcess(folder, env=env) as process:
        process.wait_ready()
        yield process


class SlowReader:
    """A client that sends one lookup and reads its answer only when told: the server's
    transport stays paused meanwhile (a tiny receive buffer), as with a slow link."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        body = orjson.dumps({"ids": self.ids.tolist()})
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (LOOKUP.encode(), len(body)) + body
        )
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[bytes, bytes]]:
        assert self.reader is not None
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            headers[key.strip().lower()] = value.strip()
        return int(lines[0].split(b" ")[1]), headers

    async def answer(self) -> tuple[int, dict[bytes, bytes], bytes]:
        status, headers = await self.head()
        assert self.reader is not None
        body = await self.reader.readexactly(int(headers[b"content-length"]))
        return status, headers, body

    def abort(self) -> None:
        """Go away at once (RST), mid-answer."""
        assert self.writer is not None
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.writer.transport.abort()


def _check_answer(status: int, headers: dict[bytes, bytes], body: bytes, ids: np.ndarray) -> bool:
    """True for an exact 200, False for a proper refusal; anything else fails the test."""
    if status == 503:
        assert orjson.loads(body)["error"]["code"] == "overloaded", body[:200]
        assert int(headers[b"retry-after"]) >= 1
        return False
    assert status == 200, (status, body[:300])
    np.testing.assert_array_equal(np.array(orjson.loads(body)["vectors"], np.float32), TABLE[ids])
    return True


def _full_size_admitted(url: str) -> bool:
    """A request of the whole budget is admitted only when nothing at all is in flight."""
    ids = np.arange(BUDGET) % ROWS
    answer = httpx.post(url + LOOKUP, json={"ids": ids.tolist()}, timeout=120)
    if answer.status_code == 503:
        return False
    assert answer.status_code == 200, answer.text[:300]
    np.testing.assert_array_equal(np.array(answer.json()["vectors"], np.float32), TABLE[ids])
    return True


def test_a_flood_gets_exact_answers_or_503_and_healthz_answers(server: ServerProcess) -> None:
    rng = np.random.default_rng(0)
    clients = [SlowReader(rng.integers(0, ROWS, REQUEST_IDS)) for _ in range(FLOOD)]
    before = _answered(server.url)

    async def scenario() -> list[bool]:
        await asyncio.gather(*(client.send(server.port) for client in clients))
        # Every request answered by the server, the admitted ones still held by their
        # unread answers: the flood is at its height now.
        await until(lambda: _answered(server.url) >= before + FLOOD, "the flood to be answered")
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            assert (await http.get("/healthz")).status_code == 200
        await until(
            lambda: _metric(server.url, "embedding_ids_in_flight") == 2 * REQUEST_IDS,
            "the gauge to show the two admitted requests",
        )
        answers = await asyncio.gather(*(client.answer() for client in clients))
        return [
            _check_answer(*answer, client.ids)
            for answer, client in zip(answers, clients, strict=True)
        ]

    admitted = asyncio.run(scenario())
    assert sum(admitted) == 2, admitted  # the budget holds two of them at a time
    refused = _metric(server.url, "embedding_admission_refused_total", 'table="t"')
    assert refused >= FLOOD - 2
    wait_until(lambda: _metric(server.url, "embedding_ids_in_flight") == 0, "the budget to empty")
    assert _full_size_admitted(server.url)
    assert "Traceback" not in server.log()


def test_clients_that_leave_mid_answer_leave_nothing_counted(server: ServerProcess) -> None:
    rng = np.random.default_rng(1)

    async def wave() -> None:
        clients = [SlowReader(rng.integers(0, ROWS, REQUEST_IDS)) for _ in range(FLOOD)]
        await asyncio.gather(*(client.send(server.port) for client in clients))
        # Each client reads the status line (so the server has admitted or refused it), then
        # goes away in the middle of the body.
        heads = await asyncio.gather(*(client.head() for client in clients))
        assert sorted(status for status, _ in heads) == [200] * 2 + [503] * (FLOOD - 2)
        for client in clients:
            client.abort()

    for _ in range(3):
        asyncio.run(wave())
        wait_until(
            lambda: _metric(server.url, "embedding_ids_in_flight") == 0, "the budget to empty"
        )
    wait_until(lambda: _full_size_admitted(server.url), "a full-size request to be admitted")
    assert server.process.poll() is None
