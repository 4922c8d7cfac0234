"""Request-head limits uvicorn lacks, and the connection cap.

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

The head clock is a deadline per connection checked by one sweep per server (every
``SWEEP_SECONDS`` at most), not a timer armed and cancelled for every request: a slow head
is closed within ``head_timeout_seconds`` plus one sweep.

A refused connection is closed "lingering": the answer is written, the write side shut,
and what the client still sends is read and dropped for a moment, so the kernel does not
reset the connection before the client has read the answer.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from service import metrics
from service.errors import HeadersTooLarge, Overloaded, ServiceError
from service.http.error_responses import error_response
from service.http.uvicorn_internals import (
    ServerState,
    UvicornHttpProtocol,
    http_head,
    response_under_way,
)
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

# How long a refused connection is read and drained before it is closed for good.
LINGER_SECONDS = 2.0
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


class HeadLimitedProtocol(UvicornHttpProtocol):
    """The protocol plus head size, head timeout and connection cap."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._head_pending = True  # waiting for (the rest of) a request head
        self._head_bytes = 0  # bytes received since that wait began
        self._message_complete = True  # the parser has seen the whole previous request
        self._head_deadline: float | None = None  # loop time the pending head is due by
        self._refused = False  # answered with a refusal: input is drained, then closed
        self._head_too_large = False  # a parsed head was over the limit: answer 431

    # ------------------------------------------------------------ hooks (the drain's)
    def closed_after_read(self) -> bool:
        """Hook, after a read was parsed: True when it closed the connection."""
        return False

    def closed_after_response(self) -> bool:
        """Hook, after a response completed: True when it closed the connection."""
        return False

    def request_started(self) -> None:
        """Hook, after a request head made a new cycle."""

    # ------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.connections.discard(self)  # not served: it must not count against others
            metrics.CONNECTIONS_CLOSED.labels("over_capacity").inc()
            self._refuse(
                Overloaded(
                    "the server has too many open connections; retry shortly",
                    {"max_connections": self.limits.max_connections},
                )
            )
            return
        self._start_head_wait()
        _sweeper_for(self).ensure_running()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering close: drop what the client still sends
        if self._head_pending:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._refused or self.transport.is_closing() or self.closed_after_read():
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
        if self.cycle is not before:
            self.request_started()

    def on_body(self, body: bytes) -> None:
        if not self._head_too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._head_too_large:
            return
        self._message_complete = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        next_head_parsed = bool(self.pipeline)
        super().on_response_complete()
        if not self.transport.is_closing() and self.closed_after_response():
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

    # ---------------------------------------------------------------- the clock
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
        if response_under_way(self.cycle):
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
        if response_under_way(self.cycle):
            self.transport.close()  # a response is under way: no clean answer is possible
            return
        response = error_response(error)
        head = http_head(response, self.server_state.default_headers, keep_alive=False)
        self.transport.write(head + response.body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


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
            if isinstance(connection, HeadLimitedProtocol) and connection.head_overdue(now):
                connection.head_timed_out()
        if self.connections:  # else the next connection starts it again
            self.ensure_running()


_SWEEPERS: weakref.WeakKeyDictionary[ServerState, HeadSweeper] = weakref.WeakKeyDictionary()


def _sweeper_for(protocol: HeadLimitedProtocol) -> HeadSweeper:
    """The sweeper of the protocol's server (made with its first connection)."""
    sweeper = _SWEEPERS.get(protocol.server_state)
    if sweeper is None or sweeper.loop is not protocol.loop:
        interval = min(SWEEP_SECONDS, max(0.05, protocol.limits.head_timeout_seconds / 4))
        sweeper = HeadSweeper(protocol.loop, protocol.connections, interval)
        _SWEEPERS[protocol.server_state] = sweeper
    return sweeper
