"""The direct lane: small requests to tables that gather inline, answered from the HTTP
protocol without an ASGI task.

Per request, uvicorn's ASGI cycle (a task, receive/send messages, header checks, the head
and the body in two socket writes) costs about as much CPU as a one-id lookup itself. For
the requests that need none of it, the protocol (``protocols.LimitedHttpToolsProtocol``)
asks this lane at the request head:

* **claim**: the route may be answered directly and its table gathers inline (numpy,
  batching off: ``Route.direct`` says both), the body declares a length the protocol
  buffers whole without pausing (``max_body``: nothing waits for an app to read it), and
  there is no ``Expect: 100-continue``. Anything else takes the ASGI path, unchanged.
* **answer**: once its body is complete, the claim joins the lane's ready list; every claim
  made ready in one event-loop turn is answered in one callback, back to back, as tasks
  would run. (Answering each one inside its socket's read callback measured slower than the
  tasks it replaces: each request then ran between kernel reads and writes, with the
  interpreter's caches cold.) The answer is the one dispatcher's, run to completion
  without a loop turn; the protocol writes it.
* **hand back**: a request whose table no longer gathers inline when its turn comes (a
  reload swapped it) goes to the ASGI path untouched; one whose answer would wait on the
  event loop (an answer rendered in slices: its first wait comes before any rendering) is
  closed at that wait and served from the start by the ASGI path.

Same route table, dispatcher, admission, metrics and error bodies as the ASGI path: only
the transport around them differs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

from service.encoding.responses import EncodedResponse
from service.http.dispatcher import Dispatcher, Receive, RouteMatcher, Scope
from service.http.route_table import Route

log = logging.getLogger(__name__)

DIRECT_MAX_BODY = min(4096, HIGH_WATER_LIMIT)
"""The largest body the lane claims. Small requests are where uvicorn's per-request machinery
is a large share of the cost; a large one costs its rows, and large ones answered back to back
in one callback hold the event loop for all of them (1,024-id JSON lookups on Zipf ids
measured 1.9 ms of server CPU a request through the lane, 1.35 ms as tasks). And uvicorn
buffers at most ``HIGH_WATER_LIMIT`` of a body before it pauses reading for an app to take
it: no app reads a claimed request's body."""
_LENGTH_DIGITS = 20  # a longer Content-Length (leading zeros) is left to the ASGI path


class _WouldWait:
    """The answer would wait on the event loop: serve the request the ASGI way."""


WOULD_WAIT: Final = _WouldWait()


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
        if route.direct is None or not route.direct(params, self._registry):
            return None
        if not _declares_small_body(headers, self.max_body):
            return None
        return Claim(route, params, handle)

    def gathers_inline(self, claim: Claim) -> bool:
        """The claimed request's table still gathers in the caller's stack (checked at the
        claim, and again at the answer: a reload may have swapped the table in between)."""
        direct = claim.route.direct
        return direct is not None and direct(claim.params, self._registry)

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

    def answer(
        self, claim: Claim, scope: Scope, receive: Receive, body: bytes
    ) -> EncodedResponse | _WouldWait | None:
        """The dispatcher's answer, run to completion now: the response, ``None`` (the client
        left), or ``WOULD_WAIT`` (its table no longer gathers inline, or it was closed at its
        first wait, a bare loop turn before any rendering)."""
        if not self.gathers_inline(claim):
            self.handed_back += 1
            return WOULD_WAIT
        served = self.dispatcher.serve(claim.route, claim.params, scope, receive, body)
        try:
            waited_on = served.send(None)
        except StopIteration as done:
            self.answered += 1
            response: EncodedResponse | None = done.value
            return response
        served.close()
        self.handed_back += 1
        if waited_on is not None:  # a future: work was started that nobody will wait for
            log.warning("a direct answer waited on %r; served again by the ASGI path", waited_on)
        return WOULD_WAIT


def _declares_small_body(headers: Iterable[tuple[bytes, bytes]], limit: int) -> bool:
    """A ``Content-Length`` of at most ``limit`` bytes, no transfer coding (ASGI servers
    lower-case header names)."""
    length = None
    for name, value in headers:
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            return False
    return (
        length is not None
        and length.isdigit()
        and len(length) <= _LENGTH_DIGITS  # int() refuses over 4,300 digits
        and int(length) <= limit
    )
