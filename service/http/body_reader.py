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


LENGTH_DIGITS = 20
"""The longest Content-Length read as a number (int() refuses over 4,300 digits; no body is
near 20)."""


def parse_content_length(value: str | bytes) -> int | None:
    """A Content-Length header's number, or ``None`` when it is not one (ASCII digits only,
    at most ``LENGTH_DIGITS`` of them): the one parser of the header."""
    if len(value) <= LENGTH_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    return None


def check_declared_length(content_length: str | None, limit: int) -> None:
    """Refuse at once, before reading a byte, when Content-Length is over the limit."""
    if content_length is None:
        return
    declared = parse_content_length(content_length)
    if declared is None:
        raise InvalidBody("Content-Length is not an integer")
    if declared > limit:
        raise too_large(limit)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, or ``PayloadTooLarge`` as soon as the chunks pass ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")  # ASGI: http.request bodies are bytes
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        if not chunks and not message.get("more_body", False):
            return chunk  # the common case, one message: no copy
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
