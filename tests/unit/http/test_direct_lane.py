"""The direct lane (``service.http.direct_lane`` with ``uvicorn_internals.UvicornHttpProtocol``):
which requests it answers, that they come out byte for byte as the ASGI path writes them,
and that everything it does not answer (or must not finish) reaches the ASGI path whole.

A real asyncio server on a loopback port runs the protocol over the real app (no uvicorn
``Server``); the tests write raw HTTP and read raw responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service.http import uvicorn_internals
from service.http.app import create_app
from service.http.asgi_front import CHUNK_BYTES, FrontApp, send_response
from service.http.client_gone import CLIENT_GONE_KEY
from service.http.direct_lane import DIRECT_MAX_BODY, DirectLane
from service.http.protocols import LimitedHttpToolsProtocol
from service.http.uvicorn_internals import direct_lane_of
from service.settings import ServiceSettings
from service.usecases.gather import SLICE_NUMBERS
from tests.support.polling import until
from tests.support.protocol_server import (
    DEADLINE,
    ProtocolServer,
    closed,
    protocol_server,
    response,
)
from tests.support.tables import random_table, write_npy

WIDE_DIM = 256  # rows wide enough that a request under DIRECT_MAX_BODY gets a large answer
TABLES = {
    "small": random_table(100, 8, 1),
    "wide": random_table(1200, WIDE_DIM, 2),
    "batched": random_table(100, 8, 3),
}


def post(path: str, body: bytes, *headers: bytes, version: bytes = b"1.1") -> bytes:
    head = [b"POST %s HTTP/%s" % (path.encode(), version), b"Host: t"]
    head += [b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def get(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode()


def lookup(ids: Any, table: str = "small", *headers: bytes) -> bytes:
    return post(f"/v1/tables/{table}/lookup", orjson.dumps({"ids": ids}), *headers)


@dataclass
class Harness:
    app: FrontApp
    server: ProtocolServer
    folder: Path

    @property
    def lane(self) -> DirectLane:
        assert self.app.lane is not None
        return self.app.lane

    async def connect(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, LimitedHttpToolsProtocol]:
        return await self.server.connect()


@contextlib.asynccontextmanager
async def serving(folder: Path) -> AsyncIterator[Harness]:
    for name, table in TABLES.items():
        options = 'backend = "onnxruntime"\nbatching = true\n' if name == "batched" else None
        write_npy(folder, name, table, options)
    # A versioned table: versions 1 and 2, label stable = 1.
    (folder / "vt").mkdir()
    (folder / "vt" / "table.toml").write_text("versions = {all = true}\n[labels]\nstable = 1\n")
    for number in (1, 2):
        (folder / "vt" / str(number)).mkdir()
        np.save(folder / "vt" / str(number) / "vt.npy", random_table(20, 4, 10 + number))
    app = create_app(ServiceSettings(models=folder))
    await app.registry.load()
    try:
        # As the service runs uvicorn: no access log, uvicorn's proxy-headers middleware.
        async with protocol_server(app, access_log=False) as server:
            yield Harness(app, server, folder)
    finally:
        await app.registry.close()


def run(tmp_path: Path, test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        async with serving(tmp_path / "models") as harness:
            await test(harness)

    asyncio.run(main())


def hold_claims(lane: DirectLane) -> list[Any]:
    """From now on the lane keeps the claims handed in, unanswered, in the list returned
    (the test answers one itself, at the moment it chooses)."""
    held: list[Any] = []
    lane.hand_in = lambda connection, claim, loop: held.append(claim)  # type: ignore[method-assign]
    return held


def status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def comparable(head: bytes) -> bytes:
    """The head without the backend time, which differs between any two requests."""
    return re.sub(rb"x-backend-time-ms: [0-9.]+", b"x-backend-time-ms: *", head)


V2_IDS = {"name": "ids", "datatype": "INT64", "shape": [1, 3], "data": [4, 0, 2]}

# Requests the lane claims: every small request to a table that gathers inline, whatever
# its answer (errors included), in each body format.
CLAIMED = [
    lookup([3]),
    lookup([[1, 2], [3, 0]]),
    lookup([5], "small", b"Accept: application/octet-stream"),
    post("/v1/tables/small/lookup", orjson.dumps({"ids": [7], "encoding": "base64"})),
    post(
        "/v1/tables/small/lookup",
        np.array([1, 2], "<i8").tobytes(),
        b"Content-Type: application/octet-stream",
    ),
    post("/v1/tables/small/sequences", orjson.dumps({"sequences": [[1, 2], [3]]})),
    post("/v1/tables/small/bags", orjson.dumps({"bags": [[1, 2], [3]], "mode": "mean"})),
    lookup([100]),  # out of range: 422
    post("/v1/tables/small/lookup", b"{not json"),  # 400
    post("/v1/tables/small/lookup", b"{}", b"Content-Type: text/plain"),  # 415
    lookup([True]),  # a boolean is not an id: 422
    post("/v1/tables/small/lookup", b""),  # Content-Length: 0, no JSON: 400
    post("/v2/models/small/infer", orjson.dumps({"inputs": [V2_IDS]})),  # V2, the table
    post("/v2/models/small.sequences/versions/1/infer", orjson.dumps({"inputs": [V2_IDS]})),
    # Versions: X-Table-Version on every answer, pinned or not, the 404 of an unknown one.
    lookup([3], "vt"),
    post("/v1/tables/vt/lookup?version=1", orjson.dumps({"ids": [3]})),
    post("/v1/tables/vt/bags?version=stable", orjson.dumps({"bags": [[1, 2]]})),
    post("/v1/tables/vt/lookup?version=9", orjson.dumps({"ids": [3]})),
    post("/v2/models/vt/versions/stable/infer", orjson.dumps({"inputs": [V2_IDS]})),
]


def test_small_requests_to_inline_tables_are_answered_by_the_lane_as_the_asgi_path_would(
    tmp_path: Path,
) -> None:
    async def test(harness: Harness) -> None:
        lane_reader, lane_writer, _ = await harness.connect()
        asgi_reader, asgi_writer, asgi_protocol = await harness.connect()
        asgi_protocol.lane = None  # this connection takes the ASGI path
        # As uvicorn's Server sets them (a date header, updated every second).
        harness.server.state.default_headers = [(b"date", b"Mon, 07 Dec 2026 12:00:00 GMT")]
        statuses = []
        for request in CLAIMED:
            lane_writer.write(request)
            asgi_writer.write(request)
            lane_head, lane_body = await response(lane_reader)
            asgi_head, asgi_body = await response(asgi_reader)
            assert comparable(lane_head) == comparable(asgi_head), request
            assert lane_body == asgi_body, request
            statuses.append(status(lane_head))
        assert harness.lane.answered == len(CLAIMED) and harness.lane.handed_back == 0
        assert statuses == [200] * 7 + [422, 400, 415, 422, 400, 200, 200, 200, 200, 200, 404, 200]

    run(tmp_path, test)


def test_the_lane_answers_exactly_the_table_rows(tmp_path: Path) -> None:
    async def test(harness: Harness) -> None:
        reader, writer, _ = await harness.connect()
        ids = [[4, 9, 4], [0, 99, 1]]
        writer.write(lookup(ids))
        _, body = await response(reader)
        answer = orjson.loads(body)
        assert answer["shape"] == [2, 3, 8]
        assert np.array_equal(np.array(answer["vectors"], np.float32), TABLES["small"][ids])
        assert harness.lane.answered == 1

    run(tmp_path, test)


def test_what_the_lane_does_not_claim_takes_the_asgi_path(tmp_path: Path) -> None:
    unclaimed = [
        get("/healthz"),  # not a lane route
        lookup([1], "batched"),  # a table that queues: its answer waits
        post("/v2/models/batched/infer", orjson.dumps({"inputs": [V2_IDS]})),  # V2, the same
        post("/v2/models/missing/infer", orjson.dumps({"inputs": [V2_IDS]})),  # V2 404
        lookup([1], "missing"),  # no such table: 404 from the ASGI path
        lookup(list(range(DIRECT_MAX_BODY // 2))),  # a body over DIRECT_MAX_BODY
        post("/v1/tables/small/neighbors", orjson.dumps({"ids": [1], "k": 2})),  # a search
        # A Content-Length of leading zeros past what int() reads: the ASGI path's JSON 400.
        post("/v1/tables/small/lookup", b"{}").replace(
            b"Length: 2", b"Length: " + b"0" * 5000 + b"2"
        ),
    ]

    async def test(harness: Harness) -> None:
        reader, writer, _ = await harness.connect()
        statuses = []
        for request in unclaimed:
            writer.write(request)
            head, _ = await response(reader)
            statuses.append(status(head))
        assert statuses == [200, 200, 200, 404, 404, 422, 200, 400]  # 422: ids past the rows
        assert harness.lane.answered == 0

    run(tmp_path, test)


def test_pipelined_requests_are_answered_in_order_whichever_path_serves_each(
    tmp_path: Path,
) -> None:
    batch = [lookup([1]), get("/healthz"), lookup([2], "batched"), lookup([3]), lookup([4])]

    async def test(harness: Harness) -> None:
        reader, writer, _ = await harness.connect()
        writer.write(b"".join(batch))
        bodies = [orjson.loads((await response(reader))[1]) for _ in batch]
        assert bodies[1] == {"status": "ok"}
        for answer, (table, row) in zip(
            [bodies[0], bodies[2], bodies[3], bodies[4]],
            [("small", 1), ("batched", 2), ("small", 3), ("small", 4)],
            strict=True,
        ):
            assert answer["table"] == table
            assert np.array_equal(np.array(answer["vectors"], np.float32), TABLES[table][[row]])
        assert harness.lane.answered == 3

    run(tmp_path, test)


def test_a_body_that_arrives_in_pieces_is_answered_once_complete(tmp_path: Path) -> None:
    async def test(harness: Harness) -> None:
        reader, writer, protocol = await harness.connect()
        request = lookup([5, 6])
        split = request.index(b"\r\n\r\n") + 6  # the head and two bytes of the body
        writer.write(request[:split])
        await until(lambda: protocol.cycle is not None, "the head parsed")
        for byte in request[split:]:
            writer.write(bytes([byte]))
            await writer.drain()
        _, body = await response(reader)
        assert np.array_equal(
            np.array(orjson.loads(body)["vectors"], np.float32), TABLES["small"][[5, 6]]
        )
        assert harness.lane.answered == 1

    run(tmp_path, test)


def test_an_answer_that_would_wait_is_served_from_the_start_by_the_asgi_path(
    tmp_path: Path,
) -> None:
    ids = [1, 2] * 550  # 1,100 ids x 256 numbers: rendered in slices, the loop free between
    assert len(ids) * WIDE_DIM > SLICE_NUMBERS

    async def test(harness: Harness) -> None:
        reader, writer, _ = await harness.connect()
        request = lookup(ids, "wide")
        assert len(request) < DIRECT_MAX_BODY
        writer.write(request + lookup([7]))  # and one pipelined behind it, for the lane
        head, body = await response(reader)
        assert status(head) == 200
        assert body == orjson.dumps(
            {
                "table": "wide",
                "shape": [1100, WIDE_DIM],
                "dtype": "float32",
                "vectors": TABLES["wide"][ids],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        _, behind = await response(reader)
        assert np.array_equal(
            np.array(orjson.loads(behind)["vectors"], np.float32), TABLES["small"][[7]]
        )
        assert harness.lane.handed_back == 1 and harness.lane.answered == 1
        assert harness.lane.budget.in_flight == 0

    run(tmp_path, test)


def test_a_large_answer_is_sent_paced_and_its_ids_released_once_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = list(range(1000))  # 1,000 x 256 numbers: one render, over CHUNK_BYTES of JSON
    held_while_sending: list[int] = []

    async def spied_send(send: Any, response: Any, head: bool = False) -> None:
        held_while_sending.append(budget.in_flight)
        await send_response(send, response, head)

    monkeypatch.setattr(uvicorn_internals, "send_response", spied_send)

    async def test(harness: Harness) -> None:
        nonlocal budget
        budget = harness.lane.budget
        reader, writer, _ = await harness.connect()
        writer.write(lookup(ids, "wide"))
        _, body = await response(reader)
        assert len(body) > CHUNK_BYTES
        vectors = np.array(orjson.loads(body)["vectors"], np.float32)
        assert np.array_equal(vectors, TABLES["wide"][ids])
        assert harness.lane.answered == 1
        assert held_while_sending == [len(ids)]  # paced, the ids admitted while it is sent
        await until(lambda: harness.lane.budget.in_flight == 0, "the ids released")

    budget: Any = None
    run(tmp_path, test)


@pytest.mark.parametrize(
    "request_bytes",
    [
        lookup([1], "small", b"Connection: close"),
        post("/v1/tables/small/lookup", b'{"ids":[1]}', version=b"1.0"),
    ],
    ids=["connection-close", "http-1.0"],
)
def test_a_last_request_is_answered_with_connection_close_then_closed(
    tmp_path: Path, request_bytes: bytes
) -> None:
    async def test(harness: Harness) -> None:
        reader, writer, _ = await harness.connect()
        writer.write(request_bytes)
        head, _ = await response(reader)
        assert status(head) == 200 and b"\r\nconnection: close\r\n" in head
        assert await closed(reader)
        assert harness.lane.answered == 1

    run(tmp_path, test)


def test_expect_100_continue_is_left_to_the_asgi_path(tmp_path: Path) -> None:
    async def test(harness: Harness) -> None:
        reader, writer, _ = await harness.connect()
        body = b'{"ids":[2]}'
        request = post("/v1/tables/small/lookup", body, b"Expect: 100-continue")
        writer.write(request[: -len(body)])  # the head: the body waits for the go-ahead
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(body)
        head, answer = await response(reader)
        assert status(head) == 200 and orjson.loads(answer)["shape"] == [1, 8]
        assert harness.lane.answered == 0

    run(tmp_path, test)


def test_a_drain_answers_a_claimed_request_whose_body_is_arriving_then_closes(
    tmp_path: Path,
) -> None:
    async def test(harness: Harness) -> None:
        reader, writer, protocol = await harness.connect()
        request = lookup([8, 9])
        writer.write(request[:-3])
        await until(lambda: protocol.cycle is not None, "the head parsed")
        protocol.shutdown()
        assert not protocol.transport.is_closing()
        writer.write(request[-3:])
        head, body = await response(reader)
        assert b"\r\nconnection: close\r\n" in head and orjson.loads(body)["shape"] == [2, 8]
        assert await closed(reader)
        assert harness.lane.answered == 1

    run(tmp_path, test)


def test_a_client_gone_before_its_turn_gets_nothing_and_holds_nothing(tmp_path: Path) -> None:
    async def test(harness: Harness) -> None:
        _, writer, protocol = await harness.connect()
        lane = harness.lane
        handed_in = hold_claims(lane)
        writer.write(lookup([1]))
        await until(lambda: bool(handed_in), "the request claimed and handed in")
        writer.transport.abort()
        await until(lambda: protocol.transport.is_closing(), "the server to see the client go")
        protocol.answer_claim(handed_in[0])
        assert lane.answered == 0 and lane.budget.in_flight == 0

    run(tmp_path, test)


def test_a_fault_in_the_lane_closes_only_its_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(harness: Harness) -> None:
        lane = harness.lane
        answer = lane.answer

        def faulty(claim: Any, scope: Any, body: bytes) -> Any:
            if b"66" in body:
                raise RuntimeError("a fault in the lane")
            return answer(claim, scope, body)

        lane.answer = faulty  # type: ignore[method-assign]
        bad_reader, bad_writer, _ = await harness.connect()
        good_reader, good_writer, _ = await harness.connect()
        bad_writer.write(lookup([66]))
        good_writer.write(lookup([67]))
        assert await closed(bad_reader)
        head, _ = await response(good_reader)
        assert status(head) == 200
        assert "the direct lane could not answer a request" in caplog.text
        assert lane.budget.in_flight == 0

    run(tmp_path, test)


def test_the_lane_is_off_where_something_must_see_every_request(tmp_path: Path) -> None:
    write_npy(tmp_path, "t", TABLES["small"])
    app = create_app(ServiceSettings(models=tmp_path))
    assert direct_lane_of(app, access_log=False) is app.lane is not None
    assert direct_lane_of(app, access_log=True) is None  # uvicorn logs from ASGI send
    assert direct_lane_of(object(), access_log=False) is None  # a middleware around the app
    for off in ({"direct_lane": False}, {"raw_asgi_front": False}):
        assert create_app(ServiceSettings(models=tmp_path, **off)).lane is None


def test_a_table_swapped_before_its_turn_is_served_by_the_asgi_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(harness: Harness) -> None:
        reader, writer, protocol = await harness.connect()
        lane = harness.lane
        held = hold_claims(lane)
        writer.write(lookup([3]))
        await until(lambda: bool(held), "the request claimed and handed in")
        # A reload makes the table batched between the claim and the answer.
        (harness.folder / "small.toml").write_text('backend = "onnxruntime"\nbatching = true\n')
        await harness.app.registry.reload_local("small")
        assert not harness.app.registry.gathers_inline("small")
        protocol.answer_claim(held[0])
        head, body = await response(reader)
        assert status(head) == 200
        vectors = np.array(orjson.loads(body)["vectors"], np.float32)
        assert np.array_equal(vectors, TABLES["small"][[3]])
        assert lane.handed_back == 1 and lane.answered == 0 and lane.budget.in_flight == 0
        assert "waited on" not in caplog.text  # handed back before any work was queued

    run(tmp_path, test)


SERVER_VALUE: contextvars.ContextVar[str] = contextvars.ContextVar("server_value", default="unset")


@pytest.mark.parametrize("reset", [False, True], ids=["context-kept", "reset-contextvars"])
def test_the_lane_answers_in_a_fresh_context_with_uvicorns_reset_contextvars(
    tmp_path: Path, reset: bool
) -> None:
    async def main() -> None:
        SERVER_VALUE.set("server")  # as a lifespan or an instrumentation would
        folder = tmp_path / "models"
        write_npy(folder, "small", TABLES["small"])
        app = create_app(ServiceSettings(models=folder))
        await app.registry.load()
        try:
            async with protocol_server(app, access_log=False, reset_contextvars=reset) as server:
                lane = app.lane
                assert lane is not None
                answer, seen = lane.answer, []

                def spied(claim: Any, scope: Any, body: bytes) -> Any:
                    seen.append(SERVER_VALUE.get())
                    return answer(claim, scope, body)

                lane.answer = spied  # type: ignore[method-assign]
                reader, writer, _ = await server.connect()
                writer.write(lookup([1]))
                head, _ = await response(reader)
                assert status(head) == 200
                assert seen == ["unset" if reset else "server"]
        finally:
            await app.registry.close()

    asyncio.run(main())


def test_the_scope_of_an_asgi_request_says_when_its_client_has_gone() -> None:
    started: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope)
        while (await receive())["type"] != "http.disconnect":
            pass

    async def main() -> None:
        async with protocol_server(app) as server:
            _, writer, _ = await server.connect()
            writer.write(get("/anything"))
            await until(lambda: bool(started), "the request's task started")
            client_gone = started[0][CLIENT_GONE_KEY]
            assert client_gone() is False
            writer.transport.abort()
            await until(client_gone, "the server to see the client go")

    asyncio.run(main())
