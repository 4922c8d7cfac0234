"""The direct lane: small requests to tables that gather inline, answered from the HTTP
protocol without an ASGI task.

Per request, uvicorn's ASGI cycle (a task, receive/send messages, header checks, the head
and the body in two socket writes) costs about as much CPU as a one-id lookup itself. For
the requests that need none of it, the protocol (``uvicorn_internals.UvicornHttpProtocol``)
asks this lane at the request head:

* **claim**: the route may be answered directly and its table gathers inline (numpy,
  batching off: ``Route.direct`` says both), the body declares a length the protocol
  buffers whole without pausing (``max_body``: nothing waits for an app to read it), and
  there is no ``Expect: 100-continue``. Anything else takes the ASGI path, unchanged.
* **answer**: once its body is complete, the claim joins the lane's ready list; every claim
  made ready in one event-loop turn is answered in one callback, back to back, as tasks
  would run. (Answering each one inside its socket's read callback measured slower than the
  tasks it replaces: each request then ran between kernel reads and writes, with the
  interpreter's caches cold.) The answer is the one dispatcher's synchronous path
  (``Dispatcher.serve_inline``: the route's ``Direct.answer``, a use case's plan run
  inline); the protocol writes it.
* **hand back**: a request whose table no longer gathers inline when its turn comes (a
  reload swapped it), or whose plan refuses to run inline (an answer rendered in slices,
  the event loop free between them: ``NotInline``, before any rows are gathered), goes to
  the ASGI path untouched.

Same route table, dispatcher, admission, metrics and error bodies as the ASGI path: only
the transport around them differs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service.encoding.responses import EncodedResponse
from service.http.body_reader import parse_content_length
from service.http.dispatcher import Dispatcher, Scope
from service.http.route_matcher import RouteMatcher
from service.http.route_spec import Route

log = logging.getLogger(__name__)

DIRECT_MAX_BODY = 4096
"""The largest body the lane claims. Small requests are where uvicorn's per-request machinery
is a large share of the cost; a large one costs its rows, and large ones answered back to back
in one callback hold the event loop for all of them (1,024-id JSON lookups on Zipf ids
measured 1.9 ms of server CPU a request through the lane, 1.35 ms as tasks). And it is
under uvicorn's ``HIGH_WATER_LIMIT``, the most of a body uvicorn buffers before it pauses
reading for an app to take it (no app reads a claimed request's body): the canary test
checks it."""


@dataclass(slots=True)
class Claim:
    """A request the lane will answer: route, path parameters, and the protocol's handle
    on the request (its uvicorn ``RequestResponseCycle``; opaque here)."""

    route: Route
    params: Mapping[str, str]
    handle: Any


class DirectConnection(Protocol):
    """A connection whose claims the lane answers (the protocol)."""

    def answer_claim(self, claim: Claim) -> None:
        """Answer ``claim`` now, or hand it to the ASGI path."""

    def abandon(self) -> None:
        """Close the connection: its claimed request could not be answered."""


class DirectLane:
    """Claims requests at their head and answers the ready ones once per loop turn."""

    def __init__(
        self, dispatcher: Dispatcher, matcher: RouteMatcher, max_body: int = DIRECT_MAX_BODY
    ) -> None:
        self.dispatcher = dispatcher
        self.matcher = matcher
        self.budget = dispatcher.budget
        self.max_body = max_body
        self._registry = dispatcher.services.registry
        self._ready: list[tuple[DirectConnection, Claim]] = []
        # Since start (tests and profiling read them): run to the end here, or handed back.
        self.answered = 0
        self.handed_back = 0

    def claim(
        self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]], handle: Any
    ) -> Claim | None:
        """A claim on this request, or ``None`` when the ASGI path must serve it."""
        found = self.matcher.match(method, path)
        if found is None:
            return None
        route, params = found
        if route.direct is None or not route.direct.gathers_inline(params, self._registry):
            return None
        if not _declares_small_body(headers, self.max_body):
            return None
        return Claim(route, params, handle)

    def gathers_inline(self, claim: Claim) -> bool:
        """The claimed request's table still gathers in the caller's stack (checked at the
        claim, and again at the answer: a reload may have swapped the table in between)."""
        direct = claim.route.direct
        return direct is not None and direct.gathers_inline(claim.params, self._registry)

    def hand_in(
        self, connection: DirectConnection, claim: Claim, loop: asyncio.AbstractEventLoop
    ) -> None:
        """``claim``'s body is complete: answer it with the others ready this loop turn."""
        ready = self._ready
        ready.append((connection, claim))
        if len(ready) == 1:
            loop.call_soon(self._answer_ready)

    def _answer_ready(self) -> None:
        ready, self._ready = self._ready, []
        for connection, claim in ready:
            try:
                connection.answer_claim(claim)
            except Exception:  # a fault here must not strand the other requests of the turn
                log.exception("the direct lane could not answer a request; closing its connection")
                connection.abandon()

    def answer(self, claim: Claim, scope: Scope, body: bytes) -> EncodedResponse | None:
        """The dispatcher's answer, computed now; ``None``: serve it from a task (its table
        no longer gathers inline, or its plan cannot run inline), nothing computed."""
        response = None
        if self.gathers_inline(claim):
            response = self.dispatcher.serve_inline(claim.route, claim.params, scope, body)
        if response is None:
            self.handed_back += 1
        else:
            self.answered += 1
        return response


def _declares_small_body(headers: Iterable[tuple[bytes, bytes]], limit: int) -> bool:
    """A ``Content-Length`` of at most ``limit`` bytes, no transfer coding (ASGI servers
    lower-case header names)."""
    length = None
    for name, value in headers:
        if name == b"content-length":
            length = parse_content_length(value)
            if length is None:
                return False  # the ASGI path answers it
        elif name == b"transfer-encoding":
            return False
    return length is not None and length <= limit
