"""The drain: what a connection does when the server stops (``shutdown()``, called by the
server on SIGTERM).

uvicorn closes every connection that has no response under way, which loses a request whose
head (or whole request) was read, or is still arriving, but not yet answered. Here only a
connection with nothing unanswered (nothing received since its last response, no bytes
waiting unread in its socket) closes at once; any other one finishes what it received: the
response to the last request received says ``Connection: close`` and the connection closes
after it. The head timeout still bounds a head that never completes, the server's drain
timeout the rest.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from service.http.head_limits import HeadLimitedProtocol
from service.http.uvicorn_internals import (
    Cycle,
    before_response_starts,
    body_arriving,
    make_last_response,
    response_under_way,
)


class DrainingProtocol(HeadLimitedProtocol):
    """The head-limited protocol whose ``shutdown()`` answers what it received first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._draining = False  # the server stops: close once nothing received is unanswered

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
            before_response_starts(cycle, self._last_if_nothing_after)
        running = self.cycle
        if not self.pipeline and response_under_way(running) and not self._request_after(running):
            # Its response is the last: it says Connection: close (unless already started)
            # and the connection closes after it.
            make_last_response(running)

    # ------------------------------------------------------------ the protocol's hooks
    def closed_after_read(self) -> bool:
        if self._draining and self._idle():
            self.transport.close()  # what arrived held no request (say, a stray CRLF)
            return True
        return False

    def closed_after_response(self) -> bool:
        if self._draining and self._idle():
            self.transport.close()  # draining, and nothing more was received: done
            return True
        return False

    def request_started(self) -> None:
        if self._draining:
            before_response_starts(self.cycle, self._last_if_nothing_after)

    def last_response_now(self, cycle: Cycle) -> None:
        if self._draining:
            self._last_if_nothing_after(cycle)

    def last_response_at_start(self, cycle: Cycle) -> None:
        if self._draining:
            before_response_starts(cycle, self._last_if_nothing_after)

    # ---------------------------------------------------------------------- state
    def _last_if_nothing_after(self, cycle: Cycle) -> None:
        if not self._request_after(cycle):
            make_last_response(cycle)

    def _idle(self) -> bool:
        """Nothing received is unanswered: no response under way or queued, no request begun
        (partial head or body), no bytes waiting unread in the socket."""
        return (
            not response_under_way(self.cycle)
            and not self.pipeline
            and self._message_complete
            and not _unread_bytes(self.transport)
        )

    def _request_after(self, cycle: Cycle | None) -> bool:
        """True when bytes of a request after ``cycle``'s have arrived (parsed or not yet read)."""
        if cycle is None or body_arriving(cycle):
            return False  # its own body is still arriving: nothing can follow it yet
        return (
            self.cycle is not cycle
            or bool(self.pipeline)
            or not self._message_complete
            or _unread_bytes(self.transport)
        )


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
