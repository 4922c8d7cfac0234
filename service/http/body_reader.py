"""Reads a request body from ASGI ``receive`` without ever holding more than the limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.errors import InvalidBody, PayloadTooLarge

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class ClientDisconnected(Exception):
    """The client went away before its body arrived; nobody is left to answer."""


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body exceeds the limit of {limit} bytes", {"max_body_bytes": limit}
    )


def check_declared_length(content_length: str | None, limit: int) -> None:
    """Refuse at once, before reading a byte, when Content-Length is over the limit."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise InvalidBody("Content-Length is not an integer") from None
    if declared > limit:
        raise too_large(limit)


def whole_body(message: MutableMapping[str, Any], limit: int) -> bytes | None:
    """The body when ``message`` (the first ``receive()``) holds all of it, else ``None``:
    most bodies arrive in one message, and this reads them without another coroutine."""
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    if message.get("more_body", False):
        return None
    body: bytes = message.get("body", b"")  # ASGI: http.request bodies are bytes
    if len(body) > limit:
        raise too_large(limit)
    return body


async def read_body(
    receive: Receive, limit: int, first: MutableMapping[str, Any] | None = None
) -> bytes:
    """The whole body, or ``PayloadTooLarge`` as soon as the chunks pass ``limit``.

    ``first``: the first message, when the caller has received it already."""
    message = first if first is not None else await receive()
    body = whole_body(message, limit)
    if body is not None:
        return body
    chunks = [message.get("body", b"")]
    size = len(chunks[0])
    if size > limit:
        raise too_large(limit)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
