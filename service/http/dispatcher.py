"""The one dispatcher: every route of ``ROUTES`` is authorised, read, decoded, run, encoded,
error-mapped and counted here, whether the raw-ASGI front answers it or FastAPI does."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from service import metrics
from service.decoding.body import request_media_type
from service.encoding.responses import EncodedResponse
from service.errors import NotFound, ServiceError, Unauthorized
from service.http.admission import SCOPE_KEY, IdsInFlight, ids_in
from service.http.auth import ApiKeyGuard, bearer_token, token_matches
from service.http.body_reader import (
    ClientDisconnected,
    check_declared_length,
    read_body,
    too_large,
)
from service.http.call import Call, Services
from service.http.client_gone import CLIENT_GONE_KEY, CLIENT_LEFT, unless_client_leaves
from service.http.error_responses import error_response_for, unexpected_error_response
from service.http.route_spec import ANY_TYPE, Route
from service.tables.served_table import ServedTable
from service.usecases.plan import NotInline

Scope = MutableMapping[str, Any]
VERSION_HEADER = "x-table-version"
"""Names the version that answered a table route (API.md, "Versions")."""
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def scope_headers(scope: Scope) -> dict[str, str]:
    """Request headers as a lower-case ``str`` dict (the last of repeated names wins)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _media_type(content_type: str | None, accepted: Mapping[str, Any]) -> str:
    """The body's media type if the route has a decoder for it (no Content-Type: JSON)."""
    if content_type in accepted:  # the common case, an exact media type, without parsing
        return content_type  # type: ignore[return-value]  # a key of accepted: a str
    if ANY_TYPE in accepted:
        return ANY_TYPE
    return request_media_type(content_type, accepted)


class Dispatcher:
    """Serves one matched route; the same coroutine behind the ASGI front and FastAPI."""

    def __init__(
        self, services: Services, guard: ApiKeyGuard | None, admin_key: bytes | None
    ) -> None:
        self.services = services
        self.guard = guard
        self.admin_key = admin_key
        self.max_body_bytes = services.settings.max_body_bytes
        self.budget = IdsInFlight(services.settings.max_ids_in_flight)

    def authorise(self, route: Route, scope: Scope) -> None:
        """Raise unless the request may use ``route`` (by the route's auth class)."""
        if route.auth == "admin":
            if self.admin_key is None:
                raise NotFound(f"no route {scope['path']}")
            if not token_matches(bearer_token(scope["headers"]), [self.admin_key]):
                raise Unauthorized(
                    "the admin key is required: send 'Authorization: Bearer <admin key>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        elif self.guard is not None and (
            route.auth == "key" or (route.auth == "probe" and self.guard.protect_health)
        ):
            self.guard.check(scope["headers"])

    async def serve(
        self, route: Route, params: Mapping[str, str], scope: Scope, receive: Receive
    ) -> EncodedResponse | None:
        """The response to one request (``None``: the client left before it was ready).

        A request with ids is admitted into the worker's ids-in-flight budget after it is
        decoded (``503 overloaded`` when full) by the ``Admission`` that ``FrontApp`` put in
        the scope and releases after sending; without one (the FastAPI app on its own) it
        is not counted.

        One coroutine on purpose: at W1 an extra await level is a measurable share."""
        started = time.perf_counter()
        call = Call(
            params, scope_headers(scope), self.services, query=scope.get("query_string", b"")
        )
        held: tuple[ServedTable, ...] = ()
        try:
            self._check_head(route, call, scope)
            body = await read_body(receive, self.max_body_bytes) if route.decoders else b""
            request = self._decode(route, call, scope, body)
            # No await since the resolver picked them: a flip cannot close them before this.
            held = _hold(call.resolved_tables())
            work = route.use_case(call, request)
            if route.decoders and self.services.registry.batched(call.table_label):
                result = await unless_client_leaves(work, receive, scope.get(CLIENT_GONE_KEY))
                if result is CLIENT_LEFT:
                    return None
            else:
                result = await work
            response = route.encoder(result)
        except ClientDisconnected:
            return None
        except Exception as exc:
            response = _error_response(route, scope, exc)
        finally:
            for table in held:
                table.release()
        return self._counted(call, route, response, started)

    def serve_inline(
        self, route: Route, params: Mapping[str, str], scope: Scope, body: bytes
    ) -> EncodedResponse | None:
        """The response to one whole request whose route has a direct answer, computed in
        the caller's stack (the direct lane): the same steps as ``serve``, the use case's
        synchronous path. ``None``: it cannot be answered inline (``NotInline``: nothing
        was computed, nothing counted); serve it with ``serve`` from a task."""
        direct = route.direct
        assert direct is not None, "a route without a direct answer"
        started = time.perf_counter()
        call = Call(
            params, scope_headers(scope), self.services, query=scope.get("query_string", b"")
        )
        try:
            self._check_head(route, call, scope)
            request = self._decode(route, call, scope, body)
            response = route.encoder(direct.answer(call, request))
        except NotInline:
            return None
        except Exception as exc:
            response = _error_response(route, scope, exc)
        return self._counted(call, route, response, started)

    def _check_head(self, route: Route, call: Call, scope: Scope) -> None:
        """What the head alone decides: authorisation, and a declared body over the limit."""
        if route.auth != "public" and (self.guard is not None or route.auth == "admin"):
            self.authorise(route, scope)
        if route.decoders:
            check_declared_length(call.headers.get("content-length"), self.max_body_bytes)

    def _decode(self, route: Route, call: Call, scope: Scope, body: bytes) -> Any:
        """The decoded request (``None`` for a route without a body), resolved and admitted."""
        decoders = route.decoders
        if decoders:
            if len(body) > self.max_body_bytes:
                raise too_large(self.max_body_bytes)
            call.body = body
            call.media_type = _media_type(call.headers.get("content-type"), decoders)
        if route.resolve is not None:
            route.resolve(call)
        if not decoders:
            return None
        request = decoders[call.media_type](call)
        admission = scope.get(SCOPE_KEY)
        if admission is not None:  # FrontApp (or the lane) releases it once the response is sent
            admission.admit(ids_in(request), call.table_label)
        return request

    def _counted(
        self, call: Call, route: Route, response: EncodedResponse, started: float
    ) -> EncodedResponse:
        """``response``, counted in the request metrics, with ``X-Table-Version`` once the
        route resolved its table's version (errors after that included)."""
        if call.version_header is not None:
            response.headers[VERSION_HEADER] = call.version_header
        seconds = time.perf_counter() - started
        metrics.observe_request(call.table_label, route.label, response.status, seconds)
        return response


def _error_response(route: Route, scope: Scope, exc: Exception) -> EncodedResponse:
    """A ``ServiceError``'s answer (API.md's body, V2's on /v2 paths); anything else is a bug:
    a generic 500, the details logged."""
    if isinstance(exc, ServiceError):
        return error_response_for(scope["path"], exc)
    return unexpected_error_response(exc, f"{route.label} {scope['path']!r}")


def _hold(tables: tuple[ServedTable, ...]) -> tuple[ServedTable, ...]:
    """``tables``, each held until the request is answered (a retired version waits)."""
    for table in tables:
        table.hold()
    return tables
