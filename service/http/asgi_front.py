"""The raw-ASGI front: routes of ``ROUTES`` answered by the dispatcher without FastAPI's
per-request machinery; anything else (404s, 405s, or every route with ``--no-raw-asgi-front``)
goes to the FastAPI app generated from the same table. The body limit holds for both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.encoding.responses import EncodedResponse
from service.errors import ServiceError
from service.http.admission import SCOPE_KEY, Admission
from service.http.body_reader import parse_content_length, too_large
from service.http.direct_lane import DirectLane
from service.http.dispatcher import Dispatcher, Receive, Scope
from service.http.error_responses import error_response_for
from service.http.response_head import response_headers
from service.http.route_matcher import RouteMatcher

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CHUNK_BYTES = 1 << 20
"""Bodies over this go out in messages of this size: each waits for the transport to drain
below its high-water mark (uvicorn's flow control), so a response is handed to the socket
progressively and the transport never holds a copy of a whole large body."""


async def send_response(send: Send, response: EncodedResponse, head: bool = False) -> None:
    """Send a finished response: the head, then its body (HEAD: the head only), in
    ``CHUNK_BYTES`` messages when it is larger (views of the body: no copy)."""
    body = response.body
    headers = response_headers(response)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if head or len(body) <= CHUNK_BYTES:
        await send({"type": "http.response.body", "body": b"" if head else body})
        return
    view = memoryview(body).cast("B")
    size = len(view)
    for start in range(0, size, CHUNK_BYTES):
        end = start + CHUNK_BYTES
        await send({"type": "http.response.body", "body": view[start:end], "more_body": end < size})


class FrontApp:
    """ASGI app: the route table's routes served directly, everything else by ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        dispatcher: Dispatcher,
        matcher: RouteMatcher,
        raw_asgi_front: bool = True,
        lane: DirectLane | None = None,
    ) -> None:
        self.app = app
        self.dispatcher = dispatcher
        self.matcher = matcher
        self.raw_asgi_front = raw_asgi_front
        self.lane = lane
        """The direct lane: what our HTTP protocol answers itself, without calling this app
        (``None``: nothing). The protocol finds it here (``uvicorn_internals.direct_lane_of``)."""
        self.registry = dispatcher.services.registry
        self.max_body_bytes = dispatcher.max_body_bytes
        self.budget = dispatcher.budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Ids the dispatcher admits stay counted until the response has been sent, and are
        # given back whatever happens (error, disconnect, cancellation): one finally here.
        admission = scope[SCOPE_KEY] = Admission(self.budget)
        try:
            path: str = scope["path"]
            found = self.matcher.match(scope["method"], path)
            if found is not None and self.raw_asgi_front:
                route, params = found
                response = await self.dispatcher.serve(route, params, scope, receive)
                if response is not None:
                    await send_response(send, response, scope["method"] == "HEAD")
                return
            guard = self.dispatcher.guard
            if found is None and guard is not None and guard.protects(path):
                try:
                    guard.check(scope["headers"])
                except ServiceError as error:
                    await send_response(send, error_response_for(path, error))
                    return
            await self.app(scope, self._limited(scope, receive), send)
        finally:
            admission.release()

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        """Body limit for what FastAPI serves: refuse by header, or while streaming."""
        limit = self.max_body_bytes
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                declared = parse_content_length(value)
                if declared is not None and declared > limit:
                    return _refusing(limit)
        received = 0

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        return limited_receive


def _refusing(limit: int) -> Receive:
    async def refuse() -> MutableMapping[str, Any]:
        raise too_large(limit)

    return refuse
