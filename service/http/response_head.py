"""The header lines of a response, declared once: the ASGI front sends them as ASGI
headers, the direct lane and the protocol's refusals write them as bytes
(``uvicorn_internals.http_head``)."""

from __future__ import annotations

from service.encoding.responses import EncodedResponse

_CONTENT_TYPES = {
    "application/json": (b"content-type", b"application/json"),
    "application/octet-stream": (b"content-type", b"application/octet-stream"),
}


def response_headers(response: EncodedResponse) -> list[tuple[bytes, bytes]]:
    """``content-type``, ``content-length``, then the response's own headers, in that order."""
    headers = [
        _CONTENT_TYPES.get(response.media_type)
        or (b"content-type", response.media_type.encode("latin-1")),
        (b"content-length", b"%d" % len(response.body)),
    ]
    for key, value in response.headers.items():
        headers.append((key.encode("latin-1"), value.encode("latin-1")))
    return headers
