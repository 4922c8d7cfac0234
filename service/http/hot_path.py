"""The lean ASGI front: lookup and sequences bypass FastAPI's per-request machinery.

FastAPI keeps every route, schema and the docs; this layer only answers the two
hot routes itself (routing by string split, no dependency injection, no response
validation, no ``jsonable_encoder``) and enforces the body limit for all routes.
Every other request passes through to FastAPI unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from service.encoding.responses import EncodedResponse
from service.errors import ServiceError
from service.http.auth import ApiKeyGuard
from service.http.body_reader import ClientDisconnected, check_declared_length, read_body, too_large
from service.http.error_responses import (
    error_response_for,
    unexpected_error_response,
)
from service.http.handlers import LookupHandlers, route_metrics
from service.http.v2_routes import V2Handlers

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PREFIX = "/v1/tables/"
_CONTENT_TYPES = {
    "application/json": (b"content-type", b"application/json"),
    "application/octet-stream": (b"content-type", b"application/octet-stream"),
}
_HOT_ROUTES = ("lookup", "sequences", "bags", "neighbors")
_V2_PREFIX = "/v2/models/"
_V2_INFER = "/infer"


def scope_headers(scope: Scope) -> dict[str, str]:
    """Request headers as a lower-case ``str`` dict (the last of repeated names wins)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def send_response(send: Send, response: EncodedResponse) -> None:
    """Send a finished response in two ASGI messages."""
    headers = [
        _CONTENT_TYPES.get(response.media_type) or (b"content-type", response.media_type.encode()),
        (b"content-length", b"%d" % len(response.body)),
    ]
    for key, value in response.headers.items():
        headers.append((key.encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


class HotPathApp:
    """ASGI app: hot routes answered directly, everything else handed to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        handlers: LookupHandlers,
        max_body_bytes: int,
        fast_path: bool = True,
        guard: ApiKeyGuard | None = None,
        v2: V2Handlers | None = None,
    ) -> None:
        self.app = app
        self.guard = guard
        self.handlers = handlers
        self.v2 = v2
        self.max_body_bytes = max_body_bytes
        self.fast_path = fast_path
        self._routes = {
            "lookup": handlers.lookup,
            "sequences": handlers.sequences,
            "bags": handlers.bags,
            "neighbors": handlers.neighbors,
        }
        if v2 is not None:
            self._routes["infer"] = v2.infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if self.guard is not None and self.guard.protects(path):
                try:
                    self.guard.check(scope["headers"])
                except ServiceError as error:
                    await send_response(send, error_response_for(path, error))
                    return
            if self.fast_path and scope["method"] == "POST" and path.startswith(_PREFIX):
                name, slash, route = path[len(_PREFIX) :].partition("/")
                if slash and route in _HOT_ROUTES and name:
                    await self._serve(scope, receive, send, name, route)
                    return
            if (
                self.fast_path
                and self.v2 is not None
                and scope["method"] == "POST"
                and path.startswith(_V2_PREFIX)
                and path.endswith(_V2_INFER)
            ):
                model = path[len(_V2_PREFIX) : -len(_V2_INFER)]
                if model and "/" not in model:
                    await self._serve(scope, receive, send, model, "infer")
                    return
            receive = self._limited(scope, receive)
        await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, name: str, route: str
    ) -> None:
        started = time.perf_counter()
        headers = scope_headers(scope)
        table_label = name if self.handlers.registry.has(name) else "_unknown"
        try:
            check_declared_length(headers.get("content-length"), self.max_body_bytes)
            body = await read_body(receive, self.max_body_bytes)
            if self.handlers.registry.batched(name):
                response = await self._unless_client_leaves(
                    self._routes[route](name, body, headers), receive
                )
                if response is None:
                    return
            else:
                response = await self._routes[route](name, body, headers)
        except ClientDisconnected:
            return
        except ServiceError as error:
            response = error_response_for(scope["path"], error)
        except Exception as exc:
            response = unexpected_error_response(exc, f"{route} on table {name!r}")
        await send_response(send, response)
        route_metrics(table_label, route, response.status, time.perf_counter() - started)

    @staticmethod
    async def _unless_client_leaves(
        work: Awaitable[EncodedResponse], receive: Receive
    ) -> EncodedResponse | None:
        """Run ``work`` but cancel it if the client disconnects first (it is then skipped
        when its batch is built instead of being computed for nobody)."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not task.done():
            task.cancel()
            return None
        return task.result()

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        """Body limit for the routes FastAPI serves: refuse by header, or while streaming."""
        limit = self.max_body_bytes
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    if int(value) > limit:
                        return _refusing(limit)
                except ValueError:
                    pass
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        return limited_receive


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _refusing(limit: int) -> Receive:
    async def refuse() -> dict[str, Any]:
        raise too_large(limit)

    return refuse
