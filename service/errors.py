"""One exception hierarchy for everything a request can fail with.

Each class carries its HTTP status and the snake_case ``code`` of API.md's
error table; ``service.http.error_responses`` turns any of them into the error
body in one place.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

RETRY_AFTER_SECONDS = 1
"""The ``Retry-After`` of every 503 that passes by itself (a full queue or ids budget, too
many connections, a table loading or being unloaded, a store failing over): one second is
long enough for a queue to drain and short enough that a client does not idle."""
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}


def json_safe(value: Any) -> Any:
    """``value`` with everything orjson cannot write made writable.

    Integers beyond int64 become strings (orjson refuses them, which would turn a 413
    into a 500), numpy scalars become Python numbers, non-finite floats become strings
    (orjson would write ``null``). Dicts, lists and tuples are walked.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        number = int(value)
        return number if INT64_MIN <= number <= INT64_MAX else str(number)
    if isinstance(value, (float, np.floating)):
        real = float(value)
        return real if math.isfinite(real) else str(real)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


class ServiceError(Exception):
    """Base of all errors that reach a client; subclasses fix status and code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    retry: ClassVar[bool] = False
    """Whether the error passes by itself: then it is sent with ``RETRY_AFTER``."""

    def __init__(
        self,
        message: str,
        detail: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # Written to JSON later: make sure it can be, whatever the decoder put in.
        self.detail = json_safe(detail) if detail else detail
        passes = self.retry if retry is None else retry
        self.headers = {**RETRY_AFTER, **(headers or {})} if passes else headers or {}


class InvalidBody(ServiceError):
    """The body cannot be decoded at all (not JSON, wrong byte length)."""

    status = 400
    code = "invalid_body"


class Unauthorized(ServiceError):
    """API keys are configured and the request carries none or a wrong one."""

    status = 401
    code = "unauthorized"


class NotFound(ServiceError):
    """Unknown route."""

    status = 404
    code = "not_found"


class TableNotFound(ServiceError):
    """Unknown (or not loaded) table name."""

    status = 404
    code = "table_not_found"


class MethodNotAllowed(ServiceError):
    """Known route, wrong method."""

    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ServiceError):
    """Body, id count or response size over the configured limits."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    """Content-Type other than JSON or octet-stream."""

    status = 415
    code = "unsupported_media_type"


class InvalidIds(ServiceError):
    """Ids that are not integers, or not the shape the route needs."""

    status = 422
    code = "invalid_ids"


class IdOutOfRange(ServiceError):
    """An id below 0 or at/above the table's row count."""

    status = 422
    code = "id_out_of_range"


class UnknownKey(ServiceError):
    """A key not in the table's vocabulary, with ``oov = "error"``."""

    status = 422
    code = "unknown_key"


class InvalidRequest(ServiceError):
    """Unknown or missing fields, bad option values."""

    status = 422
    code = "invalid_request"


class ReloadFailed(ServiceError):
    """The new version of a table could not be loaded; the old one keeps serving."""

    status = 409
    code = "reload_failed"


class ReloadIncomplete(ServiceError):
    """A reload loaded in this worker but not every live worker confirmed it in time."""

    status = 503
    code = "reload_incomplete"


class TableUnavailable(ServiceError):
    """The table is in the model repository but not served: it failed to load (``detail`` has
    the reason), or this worker is still loading it (raised with ``retry=True``)."""

    status = 503
    code = "table_unavailable"


class Overloaded(ServiceError):
    """The table's queue is full; the client should retry after a pause."""

    status = 503
    code = "overloaded"
    retry = True


class HeadersTooLarge(ServiceError):
    """The request head (request line + headers) is over the limit; the connection closes."""

    status = 431
    code = "headers_too_large"


class BackendUnavailable(ServiceError):
    """A Redis table's store cannot answer now (down, failing over, timing out, emptied).

    Always sent with ``Retry-After``; never answered with a zero or stale row instead.
    """

    status = 503
    code = "backend_unavailable"
    retry = True


class Timeout(ServiceError):
    """The request waited in the queue past its deadline."""

    status = 504
    code = "timeout"


class InternalError(ServiceError):
    """A backend failure; the message stays generic, details go to the log."""

    status = 500
    code = "internal"


class TableLoadError(Exception):
    """A table could not be loaded; the message names the file and the reason.

    Not a ``ServiceError``: it never reaches a client as a response, only
    ``/readyz`` and the log.
    """


class TableRemoved(TableLoadError):
    """The table's files are no longer in the repository (a reload of a removed table: the
    admin route answers 404 when no version of it was ever served)."""


class UpdateVersionNotFound(ServiceError):
    """A row update to a version the table does not serve (issue 25; the lead folds it into
    issue 24's ``VersionNotFound`` at merge)."""

    status = 404
    code = "version_not_found"
