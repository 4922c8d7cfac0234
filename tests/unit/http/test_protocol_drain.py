"""``LimitedHttpToolsProtocol.shutdown()``: what a drain does to each state of a connection.

A real asyncio server on a loopback port runs the protocol (no uvicorn ``Server``): the test
calls ``shutdown()`` itself, at the moment it chooses, after checking what the protocol has
read. The app answers each request with its body, once the test lets it (``release``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from service.http.drain import _unread_bytes
from service.http.protocols import LimitedHttpToolsProtocol
from tests.support.polling import until
from tests.support.protocol_server import ProtocolServer, closed, protocol_server, response


def request(body: bytes) -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body


class Echo:
    """ASGI app: answers with the request body, each response once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any
    ) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await self.release.wait()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Harness:
    """The server side and the app."""

    def __init__(self, server: ProtocolServer, app: Echo) -> None:
        self.server, self.app, self.state = server, app, server.state

    async def connect(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, LimitedHttpToolsProtocol]:
        return await self.server.connect()


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Harness]:
    app = Echo()
    async with protocol_server(app) as server:
        yield Harness(server, app)


def read_all(protocol: LimitedHttpToolsProtocol) -> bool:
    """The protocol has read every byte sent to it so far."""
    return not _unread_bytes(protocol.transport)


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        async with serving() as harness:
            await test(harness)

    asyncio.run(main())


def test_idle_keep_alive_connection_closes_at_once() -> None:
    async def test(harness: Harness) -> None:
        reader, writer, protocol = await harness.connect()
        writer.write(request(b"one"))
        head, body = await response(reader)
        assert body == b"one" and b"connection: close" not in head
        protocol.shutdown()
        assert protocol.transport.is_closing()  # at once, not after some timer
        assert await closed(reader)

    run(test)


def test_connection_that_sent_nothing_closes_at_once() -> None:
    async def test(harness: Harness) -> None:
        reader, _, protocol = await harness.connect()
        assert protocol.received_nothing
        protocol.shutdown()
        assert protocol.transport.is_closing()
        assert await closed(reader)

    run(test)


@pytest.mark.parametrize("after_a_response", [False, True], ids=["first-request", "next-request"])
def test_partial_head_is_served_then_closed(after_a_response: bool) -> None:
    async def test(harness: Harness) -> None:
        reader, writer, protocol = await harness.connect()
        if after_a_response:
            writer.write(request(b"one"))
            await response(reader)
        whole = request(b"two")
        writer.write(whole[:20])
        await until(
            lambda: not protocol.received_nothing and read_all(protocol), "half a head read"
        )
        protocol.shutdown()
        assert not protocol.transport.is_closing()
        writer.write(whole[20:])
        head, body = await response(reader)
        assert body == b"two" and b"\r\nconnection: close\r\n" in head
        assert await closed(reader)

    run(test)


def test_request_unread_in_the_socket_is_served_then_closed() -> None:
    async def test(harness: Harness) -> None:
        reader, writer, protocol = await harness.connect()
        protocol.transport.pause_reading()  # as a busy loop that has not got to it yet
        writer.write(request(b"waiting"))
        await until(lambda: not read_all(protocol), "the bytes to reach the server's socket")
        protocol.shutdown()
        assert not protocol.transport.is_closing()
        protocol.transport.resume_reading()
        head, body = await response(reader)
        assert body == b"waiting" and b"\r\nconnection: close\r\n" in head
        assert await closed(reader)

    run(test)


def test_response_under_way_says_close_and_closes_after() -> None:
    async def test(harness: Harness) -> None:
        reader, writer, protocol = await harness.connect()
        harness.app.release.clear()
        writer.write(request(b"held"))
        await until(lambda: bool(harness.state.tasks), "the request to reach the app")
        protocol.shutdown()
        harness.app.release.set()
        head, body = await response(reader)
        assert body == b"held" and b"\r\nconnection: close\r\n" in head
        assert await closed(reader)

    run(test)


def test_pipelined_requests_are_all_served_only_the_last_says_close() -> None:
    async def test(harness: Harness) -> None:
        reader, writer, protocol = await harness.connect()
        harness.app.release.clear()
        writer.write(request(b"first") + request(b"second") + request(b"third")[:10])
        # (The protocol stops reading while a request is queued: the third may stay unread.)
        await until(lambda: len(protocol.pipeline) == 1, "the second request queued")
        protocol.shutdown()
        harness.app.release.set()
        writer.write(request(b"third")[10:])
        heads = []
        for expected in (b"first", b"second", b"third"):
            head, body = await response(reader)
            assert body == expected
            heads.append(b"\r\nconnection: close\r\n" in head)
        assert heads == [False, False, True]
        assert await closed(reader)

    run(test)


def test_stray_bytes_that_hold_no_request_close_the_connection() -> None:
    async def test(harness: Harness) -> None:
        reader, writer, protocol = await harness.connect()
        writer.write(request(b"one"))
        await response(reader)
        protocol.transport.pause_reading()
        writer.write(b"\r\n")  # an empty line between requests: allowed, and not a request
        await until(lambda: not read_all(protocol), "the bytes to reach the server's socket")
        protocol.shutdown()
        assert not protocol.transport.is_closing()  # not known yet: it might be a request
        protocol.transport.resume_reading()
        assert await closed(reader)  # once read, nothing is unanswered

    run(test)
