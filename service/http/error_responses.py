"""The one place where exceptions become API.md's error body."""

from __future__ import annotations

import itertools
import logging
import os

import orjson

from service.encoding.responses import EncodedResponse
from service.errors import InternalError, ServiceError

log = logging.getLogger(__name__)

_request_numbers = itertools.count(1)


def new_request_id() -> str:
    """A process-unique id for correlating a 5xx answer with its log line."""
    return f"{os.getpid():x}-{next(_request_numbers):x}"


def error_body(error: ServiceError) -> bytes:
    """``{"error": {"code", "message", "detail"?}}``."""
    payload: dict[str, object] = {"code": error.code, "message": error.message}
    if error.detail:
        payload["detail"] = error.detail
    return orjson.dumps({"error": payload})


def error_response(error: ServiceError) -> EncodedResponse:
    """The response for a ``ServiceError``, its extra headers (Retry-After) included."""
    headers = {key.lower(): value for key, value in error.headers.items()}
    return EncodedResponse(error_body(error), status=error.status, headers=headers)


def v2_error_response(error: ServiceError) -> EncodedResponse:
    """The Open Inference Protocol's own error shape, ``{"error": "<message>"}``, for /v2 routes."""
    headers = {key.lower(): value for key, value in error.headers.items()}
    return EncodedResponse(
        orjson.dumps({"error": error.message}), status=error.status, headers=headers
    )


def error_response_for(path: str, error: ServiceError) -> EncodedResponse:
    """API.md's error body, or V2's on /v2 paths."""
    return v2_error_response(error) if path.startswith("/v2") else error_response(error)


def unexpected_error_response(exc: BaseException, where: str) -> EncodedResponse:
    """A bug, not an input mistake: generic 500 for the client, the details in the log."""
    request_id = new_request_id()
    log.error("unexpected error in %s [request %s]: %r", where, request_id, exc, exc_info=exc)
    response = error_response(
        InternalError("internal error; see the service log", {"request_id": request_id})
    )
    response.headers["x-request-id"] = request_id
    return response
