"""Content negotiation and the JSON-object envelope shared by every route's decoder."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson

from service.errors import InvalidBody, InvalidRequest, UnsupportedMediaType

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
ACCEPTED_TYPES = (JSON, OCTET_STREAM)


def request_media_type(content_type: str | None, accepted: Collection[str] = ACCEPTED_TYPES) -> str:
    """The body's media type when ``accepted`` holds it (no Content-Type reads as JSON; its
    parameters are ignored); else 415 naming the accepted ones."""
    media = content_type.split(";", 1)[0].strip().lower() if content_type else JSON
    if media in accepted:
        return media
    types = [t for t in ACCEPTED_TYPES if t in accepted]
    raise UnsupportedMediaType(
        f"Content-Type {media!r} is not accepted; send {' or '.join(types)}", {"accepted": types}
    )


def wants_binary(accept: str | None) -> bool:
    """True when octet-stream is the only type listed or ranks above JSON in ``Accept``."""
    if not accept or "octet-stream" not in accept:
        return False
    binary_q = json_q = -1.0
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == OCTET_STREAM:
            binary_q = max(binary_q, q)
        elif media in (JSON, "application/*", "*/*"):
            json_q = max(json_q, q if media == JSON else min(q, 0.999))
    return binary_q > 0 and binary_q > json_q


def json_object(body: bytes, allowed: frozenset[str], required: Iterable[str]) -> dict[str, Any]:
    """Decode ``body`` as a JSON object with only ``allowed`` keys and all ``required`` ones."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"body is not valid JSON: {exc}") from None
    if type(value) is not dict:
        raise InvalidRequest("the body must be a JSON object")
    if not allowed.issuperset(value):
        unknown = value.keys() - allowed
        raise InvalidRequest(
            f"unknown field(s): {', '.join(sorted(unknown))}",
            {"unknown": sorted(unknown), "allowed": sorted(allowed)},
        )
    if required:
        missing = [key for key in required if key not in value]
        if missing:
            raise InvalidRequest(f"missing field(s): {', '.join(missing)}", {"missing": missing})
    return value


def choice(value: Any, name: str, options: tuple[str, ...], default: str) -> str:
    """An option that must be one of ``options`` (``None`` or absent means ``default``)."""
    if value is None:
        return default
    if type(value) is not str or value not in options:
        raise InvalidRequest(
            f"{name} must be one of {', '.join(options)}", {"field": name, "allowed": list(options)}
        )
    return value
