"""uvicorn's httptools protocol with request-head limits that uvicorn lacks, and the direct
lane (``service.http.direct_lane``: small requests to inline tables answered here, without
an ASGI task).

- **Head size**: the request line plus headers are counted while they arrive; past
  ``max_head_bytes`` the client gets ``431 headers_too_large`` and the connection closes.
  Memory held for a head is bounded by the limit plus one socket read (256 KiB), not by
  what the client sends (uvicorn itself buffers a 10 MB header whole).
- **Head timeout**: from the moment the connection opens, and from the end of the
  previous response, the next head must be complete within ``head_timeout_seconds``,
  however slowly its bytes trickle in (uvicorn's keep-alive timer restarts on every
  byte, so a slowloris client holds its connection forever). A slow head is closed
  without an answer, as nginx's ``client_header_timeout`` does.
- **Connections**: past ``max_connections`` open connections in this worker, a new
  connection gets ``503 overloaded`` with ``Retry-After`` and is closed, rather than
  being accepted into a queue that never drains.
- **Drain** (``shutdown()``, called by the server on SIGTERM): uvicorn closes every
  connection that has no response under way, which loses a request whose head (or whole
  request) was read, or is still arriving, but not yet answered. Here only a connection with
  nothing unanswered (nothing received since its last response, no bytes waiting unread in
  its socket) closes at once; any other one finishes what it received: the response to the
  last request received says ``Connection: close`` and the connection closes after it. The
  head timeout still bounds a head that never completes, the server's drain timeout the rest.

The head clock is a deadline per connection checked by one sweep per server (every
``SWEEP_SECONDS`` at most), not a timer armed and cancelled for every request: a slow head
is closed within ``head_timeout_seconds`` plus one sweep.

Only this httptools protocol is used (``service.cli`` pins it); uvicorn's h11 protocol has
none of these limits.

A refused connection is closed "lingering": the answer is written, the write side shut,
and what the client still sends is read and dropped for a moment, so the kernel does not
reset the connection before the client has read the answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import weakref
from collections.abc import Set
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from service import metrics
from service.encoding.responses import EncodedResponse
from service.errors import HeadersTooLarge, Overloaded, ServiceError
from service.http.admission import SCOPE_KEY, Admission
from service.http.asgi_front import CHUNK_BYTES, Send, send_response
from service.http.direct_lane import WOULD_WAIT, Claim, DirectLane
from service.http.dispatcher import Receive, Scope
from service.http.error_responses import error_body
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

# How long a refused connection is read and drained before it is closed for good.
LINGER_SECONDS = 2.0
RETRY_AFTER_SECONDS = 1
SWEEP_SECONDS = 1.0  # the most a slow head outlives its deadline (a quarter of short ones)


@dataclass(frozen=True)
class ConnectionLimits:
    """The per-worker limits the protocol enforces (from ``ServiceSettings``)."""

    max_head_bytes: int
    head_timeout_seconds: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ConnectionLimits:
        return cls(
            max_head_bytes=settings.max_head_bytes,
            head_timeout_seconds=float(settings.head_timeout_seconds),
            max_connections=settings.max_connections,
        )


def http_protocol(settings: ServiceSettings) -> Any:
    """What ``uvicorn.run(http=...)`` takes: the protocol class bound to these limits.

    A ``functools.partial`` of a class and a frozen dataclass pickles, so it travels to
    uvicorn's worker processes.
    """
    return functools.partial(
        LimitedHttpToolsProtocol, limits=ConnectionLimits.from_settings(settings)
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus head size, head timeout and connection cap."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._head_pending = True  # waiting for (the rest of) a request head
        self._head_bytes = 0  # bytes received since that wait began
        self._message_complete = True  # the parser has seen the whole previous request
        self._head_deadline: float | None = None  # loop time the pending head is due by
        self._refused = False  # answered with a refusal: input is drained, then closed
        self._head_too_large = False  # a parsed head was over the limit: answer 431
        self._draining = False  # the server stops: close once nothing received is unanswered
        self._lane: DirectLane | None = None  # set once connected, when the app offers one
        self._claimed: Claim | None = None  # claimed by the lane, its body still arriving

    # ------------------------------------------------------------ connection
    # Transport, not BaseTransport: uvicorn's HttpToolsProtocol narrows it so (the event loop
    # hands a stream protocol a Transport); asyncio.Protocol declares the base class.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.connections.discard(self)  # not served: it must not count against others
            metrics.CONNECTIONS_CLOSED.labels("over_capacity").inc()
            self._refuse(
                Overloaded(
                    "the server has too many open connections; retry shortly",
                    {"max_connections": self.limits.max_connections},
                    {"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            )
            return
        self._start_head_wait()
        _sweeper_for(self).ensure_running()
        self._lane = direct_lane_of(self.app, self.access_log)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering close: drop what the client still sends
        if self._head_pending:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if self._draining and self._idle():
            self.transport.close()  # what arrived held no request (say, a stray CRLF)
            return
        if self._head_too_large or (
            self._head_pending and self._head_bytes > self.limits.max_head_bytes
        ):
            metrics.CONNECTIONS_CLOSED.labels("headers_too_large").inc()
            self._refuse(
                HeadersTooLarge(
                    f"the request head is over the limit of {self.limits.max_head_bytes} bytes",
                    {"max_head_bytes": self.limits.max_head_bytes},
                )
            )

    # ------------------------------------------------------- parser callbacks
    # After a head over the limit, the rest of the read is parsed for nothing: the
    # callbacks below do not start a request (no ASGI task) and touch no cycle.
    def on_message_begin(self) -> None:
        if self._head_too_large:
            return
        super().on_message_begin()
        self._message_complete = False
        if not self._head_pending:  # a pipelined request starts inside a read
            self._start_head_wait()

    def on_headers_complete(self) -> None:
        if self._head_too_large:
            return
        self._head_pending = False
        self._stop_head_clock()
        if (
            self._head_bytes > self.limits.max_head_bytes  # else the head cannot be over it
            and self._parsed_head_bytes() > self.limits.max_head_bytes
        ):
            # Arrived whole in one read (up to 256 KiB), so the running count missed it.
            self._head_too_large = True
            return
        before = self.cycle
        super().on_headers_complete()
        if self._draining and self.cycle is not before:
            self._close_after_if_last(self.cycle)

    def on_body(self, body: bytes) -> None:
        if not self._head_too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._head_too_large:
            return
        self._message_complete = True
        super().on_message_complete()
        claim = self._claimed
        if claim is not None and claim.handle is self.cycle:
            self._claimed = None
            assert self._lane is not None  # only the lane makes claims
            self._lane.hand_in(self, claim, self.loop)

    def on_response_complete(self) -> None:
        next_head_parsed = bool(self.pipeline)
        super().on_response_complete()
        if self._draining and not self.transport.is_closing() and self._idle():
            self.transport.close()  # draining, and nothing more was received: done
            return
        # The next head's clock starts now, unless it already arrived (pipelined) or the
        # current request's body is still coming (a response sent before the body ended).
        if next_head_parsed or not self._message_complete or self.transport.is_closing():
            return
        if self._head_pending:  # a pipelined head began during the response: time it from now
            self._stop_head_clock()
            self._arm_head_clock()
        else:
            self._start_head_wait()

    # ------------------------------------------------------------ direct lane
    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """Start the request's ASGI task, unless the direct lane claims the request."""
        lane = self._lane
        if (
            lane is not None
            and app is self.app  # not uvicorn's own 503 app (its concurrency limit)
            and not cycle.waiting_for_100_continue
            and not self.flow.write_paused
        ):
            scope = cycle.scope
            claim = lane.claim(scope["method"], scope["path"], scope["headers"], cycle)
            if claim is not None:
                if cycle.more_body:
                    self._claimed = claim  # handed in once the body is complete
                else:
                    lane.hand_in(self, claim, self.loop)  # a pipelined request, already read
                return
        super()._start_asgi_task(cycle, app)

    def answer_claim(self, claim: Claim) -> None:
        """Answer a claimed request (the lane calls this once its body is complete): written
        here in one write, or sent by a task when flow control must pace it, or served by
        the ASGI path when its answer would wait."""
        cycle: RequestResponseCycle = claim.handle
        if self.transport.is_closing() or cycle.disconnected:
            return  # the client left before its turn: nothing was started
        assert self._lane is not None
        # uvicorn's typed scope and receive, as the ASGI front sees them (plain mappings).
        scope = cast(Scope, cycle.scope)
        admission = scope[SCOPE_KEY] = Admission(self._lane.budget)
        try:
            receive = cast(Receive, cycle.receive)
            response = self._lane.answer(claim, scope, receive, bytes(cycle.body))
        except BaseException:
            admission.release()
            raise
        if response is WOULD_WAIT or response is None:
            admission.release()
            if response is WOULD_WAIT:
                super()._start_asgi_task(cycle, self.app)
            else:  # the client left: nothing to answer, nothing to keep the connection for
                self.transport.close()
            return
        assert isinstance(response, EncodedResponse)
        if self.flow.write_paused or len(response.body) > CHUNK_BYTES:
            self._send_paced(cycle, response, admission)
            return
        try:
            self._write_response(cycle, response)
        finally:
            admission.release()

    def abandon(self) -> None:
        """Close the connection: its claimed request could not be answered (a fault, logged)."""
        self.transport.close()

    def _write_response(self, cycle: RequestResponseCycle, response: EncodedResponse) -> None:
        """Write a whole response as uvicorn's ``send`` would, in one write (two for larger
        bodies, rather than a copy), then complete the cycle."""
        if self._draining and not self._request_after(cycle):
            cycle.keep_alive = False  # the last response of a draining connection
        head = http_head(response, self.server_state.default_headers, cycle.keep_alive)
        body = response.body
        if len(body) <= DIRECT_COPY_BYTES:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        cycle.response_started = cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _send_paced(
        self, cycle: RequestResponseCycle, response: EncodedResponse, admission: Admission
    ) -> None:
        """Send through the cycle's ASGI ``send`` in a task: chunks that wait for the client
        to read (the ids stay admitted until the last one is handed over)."""
        if self._draining:
            self._close_after_if_last(cycle)

        async def send() -> None:
            try:
                await send_response(cast(Send, cycle.send), response)
            except BaseException:
                self.transport.close()  # as uvicorn's run_asgi: never a half-sent answer kept open
                raise
            finally:
                admission.release()

        task = self.loop.create_task(send())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    # ------------------------------------------------------------------ drain
    @property
    def received_nothing(self) -> bool:
        """No byte has arrived on this connection yet (it may be one just accepted whose
        request is on its way)."""
        return self.cycle is None and self._head_bytes == 0 and not _unread_bytes(self.transport)

    def shutdown(self) -> None:
        """The server drains: close now if nothing received is unanswered, else after it.

        Replaces uvicorn's, which closes any connection without a response under way, so a
        head already read (or a whole request not yet parsed) would go unanswered.
        """
        self._draining = True
        if self._refused or self.transport.is_closing():
            return  # a refusal closes itself, lingering
        if self._idle():
            self.transport.close()
            return
        for cycle, _ in self.pipeline:  # queued, not started: each decides at its response
            self._close_after_if_last(cycle)
        running = self.cycle
        if (
            not self.pipeline
            and running is not None
            and not running.response_complete
            and not self._request_after(running)
        ):
            # Its response is the last: it says Connection: close (unless already started)
            # and the connection closes after it.
            running.keep_alive = False

    def _idle(self) -> bool:
        """Nothing received is unanswered: no response under way or queued, no request begun
        (partial head or body), no bytes waiting unread in the socket."""
        return (
            (self.cycle is None or self.cycle.response_complete)
            and not self.pipeline
            and self._message_complete
            and not _unread_bytes(self.transport)
        )

    def _request_after(self, cycle: RequestResponseCycle) -> bool:
        """True when bytes of a request after ``cycle``'s have arrived (parsed or not yet read)."""
        if cycle.more_body:
            return False  # its own body is still arriving: nothing can follow it yet
        return (
            self.cycle is not cycle
            or bool(self.pipeline)
            or not self._message_complete
            or _unread_bytes(self.transport)
        )

    def _close_after_if_last(self, cycle: RequestResponseCycle) -> None:
        """While draining: when ``cycle``'s response starts and no request follows it, the
        response says ``Connection: close`` and the connection closes after it."""
        send = cycle.send

        async def send_then_close_if_last(message: Any) -> None:
            if not cycle.response_started and not self._request_after(cycle):
                cycle.keep_alive = False
            await send(message)

        # run_asgi looks ``send`` up when the task first runs, which is after this.
        cycle.send = send_then_close_if_last  # type: ignore[method-assign]

    # ---------------------------------------------------------------- helpers
    def _start_head_wait(self) -> None:
        self._head_pending = True
        self._head_bytes = 0
        if self._head_deadline is None:
            self._arm_head_clock()

    def _arm_head_clock(self) -> None:
        self._head_deadline = self.loop.time() + self.limits.head_timeout_seconds

    def _stop_head_clock(self) -> None:
        self._head_deadline = None

    def head_overdue(self, now: float) -> bool:
        """The pending head's deadline has passed (the sweep then calls ``head_timed_out``)."""
        return self._head_deadline is not None and now >= self._head_deadline

    def head_timed_out(self) -> None:
        """Close the connection if its head is still incomplete (not while a response is
        under way: the clock restarts when it ends)."""
        self._head_deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is under way: the clock restarts when it ends
        if self._head_pending and not self.transport.is_closing():
            metrics.CONNECTIONS_CLOSED.labels("head_timeout").inc()
            log.debug("closing %s: no complete request head in time", self.client)
            self.transport.close()

    def _parsed_head_bytes(self) -> int:
        """Size of the head just parsed: ``METHOD URL HTTP/1.1``, ``name: value`` lines."""
        return len(self.url) + 24 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _refuse(self, error: ServiceError) -> None:
        """Write ``error`` as a complete response, then close the connection lingering."""
        self._refused = True
        self._stop_head_clock()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is under way: no clean answer is possible
            return
        body = error_body(error)
        lines = [
            f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
            *(f"{key.lower()}: {value}" for key, value in error.headers.items()),
        ]
        self.transport.write("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


DIRECT_COPY_BYTES = 64 * 1024
"""A direct answer's head and body up to this size are joined into one write (one send
system call, ~5 us less per request); a larger body is written on its own, not copied."""


def direct_lane_of(app: Any, access_log: bool) -> DirectLane | None:
    """The direct lane of the app uvicorn serves, if it offers one. Off with the access log
    (uvicorn writes it from ASGI ``send``) or a middleware around the app, which must see
    every request; except uvicorn's proxy-headers middleware, which only rewrites the
    client address and scheme, and nothing the lane answers reads them."""
    while isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    lane = None if access_log else getattr(app, "direct_lane", None)
    return lane if isinstance(lane, DirectLane) else None


def http_head(
    response: EncodedResponse, default_headers: list[tuple[bytes, bytes]], keep_alive: bool
) -> bytes:
    """The status line and headers uvicorn's ``send`` writes for ``response`` (the same
    bytes, in the same order: default headers, the media type, the length, the rest)."""
    content = [STATUS_LINE[response.status]]
    for name, value in default_headers:
        content += [name, b": ", value, b"\r\n"]
    content += [
        b"content-type: ",
        response.media_type.encode("latin-1"),
        b"\r\ncontent-length: %d\r\n" % len(response.body),
    ]
    for key, text in response.headers.items():
        value = text.encode("latin-1")
        if b"\r" in value or b"\n" in value:  # uvicorn's send refuses them too
            raise ValueError(f"invalid value of response header {key!r}")
        content += [key.encode("latin-1"), b": ", value, b"\r\n"]
    if not keep_alive:
        content.append(b"connection: close\r\n")
    content.append(b"\r\n")
    return b"".join(content)


def _unread_bytes(transport: asyncio.BaseTransport) -> bool:
    """True when the connection's socket holds bytes this process has not read yet (a request
    sent before the drain that the busy event loop has not got to)."""
    raw = transport.get_extra_info("socket")
    if raw is None or transport.is_closing():
        return False
    try:
        # A duplicate descriptor: asyncio's TransportSocket does not offer recv().
        with socket.socket(fileno=os.dup(raw.fileno())) as peek:
            return bool(peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # BlockingIOError: nothing waiting; others: the connection is gone
        return False


class HeadSweeper:
    """One server's head clock: every ``interval`` seconds while it has connections, each
    connection whose head is overdue is told so."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, connections: Set[Any], interval: float
    ) -> None:
        self.loop = loop
        self.connections = connections
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None

    def ensure_running(self) -> None:
        """Schedule the next sweep unless one is scheduled."""
        if self._handle is None:
            self._handle = self.loop.call_later(self.interval, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, LimitedHttpToolsProtocol) and connection.head_overdue(now):
                connection.head_timed_out()
        if self.connections:  # else the next connection starts it again
            self.ensure_running()


_SWEEPERS: weakref.WeakKeyDictionary[ServerState, HeadSweeper] = weakref.WeakKeyDictionary()


def _sweeper_for(protocol: LimitedHttpToolsProtocol) -> HeadSweeper:
    """The sweeper of the protocol's server (made with its first connection)."""
    sweeper = _SWEEPERS.get(protocol.server_state)
    if sweeper is None or sweeper.loop is not protocol.loop:
        interval = min(SWEEP_SECONDS, max(0.05, protocol.limits.head_timeout_seconds / 4))
        sweeper = HeadSweeper(protocol.loop, protocol.connections, interval)
        _SWEEPERS[protocol.server_state] = sweeper
    return sweeper
