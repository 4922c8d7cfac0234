"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for load-shaped tests.

httpx costs milliseconds of client CPU per request, which on a 2-core machine starves the
server under test; this client costs tens of microseconds. ``abort`` drops the connection
the way a client that goes away does.
"""

from __future__ import annotations

import asyncio


class RawConnection:
    """One keep-alive connection; requests on it are sequential."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, path: str, body: bytes, content_type: bytes = b"application/json") -> None:
        await self._ensure()
        assert self._writer is not None
        self._writer.write(
            b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), content_type, len(body))
            + body
        )

    async def receive(self) -> tuple[int, dict[bytes, bytes], bytes]:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                key, _, value = line.partition(b":")
                headers[key.strip().lower()] = value.strip()
        body = await self._reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection") == b"close":
            self.abort()
        return status, headers, body

    async def post(self, path: str, body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        await self.send(path, body)
        return await self.receive()

    def abort(self) -> None:
        """Drop the connection at once (RST), as a client that went away."""
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None
