"""``LimitedHttpToolsProtocol`` served on a loopback port by a plain asyncio server (no
uvicorn ``Server``): tests connect, write raw HTTP, and reach the protocol of each
connection to act on it at a moment they choose."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from service.http.protocols import ConnectionLimits, LimitedHttpToolsProtocol
from tests.support.polling import until

DEADLINE = 60.0


class ProtocolServer:
    """The server side: its state (connections, tasks) and its port."""

    def __init__(self, state: ServerState, port: int) -> None:
        self.state, self.port = state, port

    async def connect(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, LimitedHttpToolsProtocol]:
        """A new connection, and the server's protocol instance for it."""
        before = set(self.state.connections)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        await until(lambda: len(self.state.connections - before) == 1, "the connection accepted")
        (protocol,) = self.state.connections - before
        assert isinstance(protocol, LimitedHttpToolsProtocol)
        return reader, writer, protocol


@contextlib.asynccontextmanager
async def protocol_server(app: Any, **config: Any) -> AsyncIterator[ProtocolServer]:
    """Serve ``app`` through the protocol (uvicorn ``Config`` options in ``config``)."""
    settings = Config(app=app, lifespan="off", log_level="warning", **config)
    settings.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    limits = ConnectionLimits(max_head_bytes=65536, head_timeout_seconds=300.0, max_connections=100)
    server = await loop.create_server(
        lambda: LimitedHttpToolsProtocol(settings, state, {}, _loop=loop, limits=limits),
        "127.0.0.1",
        0,
    )
    try:
        yield ProtocolServer(state, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for connection in list(state.connections):
            connection.transport.close()


async def response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response: its head (status line and headers) and its body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    found = re.search(rb"content-length: (\d+)", head, re.I)
    assert found is not None, head
    return head, await asyncio.wait_for(reader.readexactly(int(found.group(1))), DEADLINE)


async def closed(reader: asyncio.StreamReader) -> bool:
    """True when the server closed the connection (EOF, or a reset) with nothing more sent."""
    try:
        return await asyncio.wait_for(reader.read(1), DEADLINE) == b""
    except ConnectionResetError:
        return True
