"""Everything of uvicorn's that is not its public API, in one module.

The service runs uvicorn's httptools protocol with limits uvicorn lacks (``head_limits``,
``drain``) and the direct lane (``direct_lane``). Both need uvicorn's insides: the
``HttpToolsProtocol`` subclass below overrides ``_start_asgi_task`` (the lane claims a
request there, before any ASGI task) and reads and writes ``RequestResponseCycle`` fields
(the lane writes its answer, the drain sets ``keep_alive``), the lane writes the response
head uvicorn's ``send`` would write (``http_head``), and the supervisor waits on
``Server._wait_tasks_to_complete``. The rest of the service uses the names defined here.

``RELIED_ON`` declares every private name and signature this relies on; the canary test
(``tests/unit/dependencies/test_uvicorn_internals.py``) checks each against the installed
uvicorn, which ``pyproject.toml`` pins to one minor release. ``docs/upgrading.md`` says how
to move the pin.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import Server, ServerState
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from service.encoding.responses import EncodedResponse
from service.http.admission import SCOPE_KEY, Admission
from service.http.asgi_front import CHUNK_BYTES, FrontApp, Send, send_response
from service.http.client_gone import CLIENT_GONE_KEY
from service.http.direct_lane import Claim, DirectLane
from service.http.dispatcher import Scope
from service.http.response_head import response_headers

__all__ = [
    "HIGH_WATER_LIMIT",
    "RELIED_ON",
    "STARTUP_FAILURE",
    "Cycle",
    "Multiprocess",
    "Process",
    "ServerState",
    "UvicornHttpProtocol",
]

Cycle = RequestResponseCycle
"""One request and its response on a connection (uvicorn's)."""


@dataclass(frozen=True)
class Relied:
    """One name of uvicorn's that the service relies on: ``owner.name`` exists and, for a
    callable, takes exactly ``parameters``; ``instance``: set on instances (in ``__init__``),
    so checked on one."""

    owner: Any
    name: str
    parameters: tuple[str, ...] | None = None
    instance: bool = False


def _fields(owner: Any, *names: str) -> tuple[Relied, ...]:
    return tuple(Relied(owner, name, instance=True) for name in names)


RELIED_ON: tuple[Relied, ...] = (
    Relied(HttpToolsProtocol, "__init__", ("self", "config", "server_state", "app_state", "_loop")),
    Relied(HttpToolsProtocol, "_start_asgi_task", ("self", "cycle", "app")),
    Relied(HttpToolsProtocol, "connection_made", ("self", "transport")),
    Relied(HttpToolsProtocol, "connection_lost", ("self", "exc")),
    Relied(HttpToolsProtocol, "data_received", ("self", "data")),
    Relied(HttpToolsProtocol, "on_message_begin", ("self",)),
    Relied(HttpToolsProtocol, "on_headers_complete", ("self",)),
    Relied(HttpToolsProtocol, "on_body", ("self", "body")),
    Relied(HttpToolsProtocol, "on_message_complete", ("self",)),
    Relied(HttpToolsProtocol, "on_response_complete", ("self",)),
    Relied(HttpToolsProtocol, "shutdown", ("self",)),
    *_fields(HttpToolsProtocol, "app", "config", "loop", "access_log", "server_state"),
    *_fields(HttpToolsProtocol, "connections", "tasks", "transport", "flow", "client"),
    *_fields(HttpToolsProtocol, "pipeline", "cycle", "url", "headers"),
    Relied(RequestResponseCycle, "run_asgi", ("self", "app")),
    Relied(RequestResponseCycle, "send", ("self", "message")),
    Relied(RequestResponseCycle, "receive", ("self",)),
    *_fields(RequestResponseCycle, "scope", "body", "more_body", "disconnected", "keep_alive"),
    *_fields(RequestResponseCycle, "response_started", "response_complete"),
    *_fields(RequestResponseCycle, "waiting_for_100_continue"),
    *_fields(FlowControl, "write_paused"),
    *_fields(ServerState, "connections", "tasks", "default_headers"),
    *_fields(Config, "reset_contextvars"),
    # service/supervisor.py: a draining Server, its worker Process and the Multiprocess
    # supervisor, subclassed (the methods it overrides or calls, the fields it reads).
    Relied(Server, "_wait_tasks_to_complete", ("self",)),
    Relied(Server, "__init__", ("self", "config")),
    Relied(Server, "handle_exit", ("self", "sig", "frame")),
    Relied(Server, "startup", ("self", "sockets")),
    Relied(Server, "shutdown", ("self", "sockets")),
    *_fields(Server, "server_state", "force_exit", "should_exit", "started"),
    Relied(Process, "__init__", ("self", "config", "sockets")),
    Relied(Process, "target", ("self", "sockets")),
    Relied(Process, "always_pong", ("self",)),
    Relied(Process, "is_alive", ("self", "timeout")),
    *_fields(Process, "_server", "process", "config"),
    Relied(Multiprocess, "__init__", ("self", "config", "sockets")),
    Relied(Multiprocess, "init_processes", ("self",)),
    Relied(Multiprocess, "terminate_all", ("self",)),
    Relied(Multiprocess, "keep_subprocess_alive", ("self",)),
    Relied(Multiprocess, "handle_signals", ("self",)),
    Relied(Multiprocess, "handle_hup", ("self",)),
    Relied(Multiprocess, "handle_ttin", ("self",)),
    Relied(Multiprocess, "handle_ttou", ("self",)),
    Relied(ProxyHeadersMiddleware, "__init__", ("self", "app", "trusted_hosts")),
    *_fields(ProxyHeadersMiddleware, "app"),
)
"""Every private name (and signature) of uvicorn's used here, declared once."""


# ------------------------------------------------------------------ the server and the app
async def wait_tasks_to_complete(server: Server) -> None:
    """Until every connection has closed and every request task has ended (uvicorn's own
    wait, which its shutdown runs after closing idle connections)."""
    await server._wait_tasks_to_complete()


def process_server(process: Process, make: Callable[[], Server]) -> Server:
    """The server a worker process runs, made by ``make`` the first time (uvicorn's
    ``Process.server`` makes a plain ``Server``)."""
    if process._server is None:
        process._server = make()
    return process._server


def direct_lane_of(app: Any, access_log: bool) -> DirectLane | None:
    """The direct lane of the app uvicorn serves (``FrontApp.lane``), if it has one. Off
    with the access log (uvicorn writes it from ASGI ``send``) or a middleware around the
    app, which must see every request; except uvicorn's proxy-headers middleware, which
    only rewrites the client address and scheme, and nothing the lane answers reads them."""
    while isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    return app.lane if isinstance(app, FrontApp) and not access_log else None


def http_head(
    response: EncodedResponse, default_headers: list[tuple[bytes, bytes]], keep_alive: bool
) -> bytes:
    """The status line and headers uvicorn's ``send`` writes for ``response`` (the same
    bytes, in the same order: the server's default headers, then ``response_headers``)."""
    content = [STATUS_LINE[response.status]]
    for name, value in (*default_headers, *response_headers(response)):
        if b"\r" in value or b"\n" in value:  # uvicorn's send refuses them too
            raise ValueError(f"invalid value of response header {name!r}")
        content += [name, b": ", value, b"\r\n"]
    if not keep_alive:
        content.append(b"connection: close\r\n")
    content.append(b"\r\n")
    return b"".join(content)


# -------------------------------------------------------------------- cycle fields, by name
def response_under_way(cycle: Cycle | None) -> bool:
    """A response for ``cycle`` has been asked for and is not complete yet."""
    return cycle is not None and not cycle.response_complete


def body_arriving(cycle: Cycle) -> bool:
    """The request's body is still arriving."""
    return cycle.more_body


def make_last_response(cycle: Cycle) -> None:
    """``cycle``'s response says ``Connection: close``; the connection closes after it."""
    cycle.keep_alive = False


def before_response_starts(cycle: Cycle, hook: Callable[[Cycle], None]) -> None:
    """Call ``hook(cycle)`` just before ``cycle``'s ASGI response starts (its task must not
    have started: ``run_asgi`` looks ``send`` up when it first runs)."""
    send = cycle.send

    async def send_after_hook(message: Any) -> None:
        if not cycle.response_started:
            hook(cycle)
        await send(message)

    cycle.send = send_after_hook  # type: ignore[method-assign]


DIRECT_COPY_BYTES = 64 * 1024
"""A direct answer's head and body up to this size are joined into one write (one send
system call, ~5 us less per request); a larger body is written on its own, not copied."""


class UvicornHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the direct lane's transport: a request the lane
    claims at ``_start_asgi_task`` is answered by ``answer_claim`` without an ASGI task.
    Every other request gets its task, with ``CLIENT_GONE_KEY`` in its scope."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lane: DirectLane | None = None  # set once connected, when the app offers one
        self._claimed: Claim | None = None  # claimed by the lane, its body still arriving
        self._fresh_context = bool(self.config.reset_contextvars)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.lane = direct_lane_of(self.app, self.access_log)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        claim = self._claimed
        if claim is not None and claim.handle is self.cycle:
            self._claimed = None
            assert self.lane is not None  # only the lane makes claims
            self.lane.hand_in(self, claim, self.loop)

    def _start_asgi_task(self, cycle: Cycle, app: Any) -> None:
        """Start the request's ASGI task, unless the direct lane claims the request."""
        lane = self.lane
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
        self.start_asgi_task(cycle, app)

    def start_asgi_task(self, cycle: Cycle, app: Any) -> None:
        """Serve ``cycle`` the ASGI way: a task runs the app (in a fresh context with
        uvicorn's ``reset_contextvars``); the scope says how to know the client left."""
        cast(MutableMapping[str, Any], cycle.scope)[CLIENT_GONE_KEY] = lambda: cycle.disconnected
        super()._start_asgi_task(cycle, app)

    # ------------------------------------------------------------ the lane's answers
    def answer_claim(self, claim: Claim) -> None:
        """Answer a claimed request (the lane calls this once its body is complete): written
        here in one write, or sent by a task when flow control must pace it, or served by
        the ASGI path when it cannot be answered inline."""
        if self._fresh_context:  # as uvicorn runs each request's task with the option
            contextvars.Context().run(self._answer_claim, claim)
        else:
            self._answer_claim(claim)

    def _answer_claim(self, claim: Claim) -> None:
        cycle: Cycle = claim.handle
        if self.transport.is_closing() or cycle.disconnected:
            return  # the client left before its turn: nothing was started
        lane = self.lane
        assert lane is not None
        scope = cast(Scope, cycle.scope)  # uvicorn's typed scope, as the ASGI front sees it
        admission = scope[SCOPE_KEY] = Admission(lane.budget)
        try:
            response = lane.answer(claim, scope, bytes(cycle.body))
        except BaseException:
            admission.release()
            raise
        if response is None:  # not inline after all: the ASGI path serves it from the start
            admission.release()
            self.start_asgi_task(cycle, self.app)
            return
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

    def last_response_now(self, cycle: Cycle) -> None:
        """Hook: decide, as a direct answer is written, whether it is the connection's last."""

    def last_response_at_start(self, cycle: Cycle) -> None:
        """Hook: decide, as a paced answer starts, whether it is the connection's last."""

    def _write_response(self, cycle: Cycle, response: EncodedResponse) -> None:
        """Write a whole response as uvicorn's ``send`` would, in one write (two for larger
        bodies, rather than a copy), then complete the cycle."""
        self.last_response_now(cycle)
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

    def _send_paced(self, cycle: Cycle, response: EncodedResponse, admission: Admission) -> None:
        """Send through the cycle's ASGI ``send`` in a task: chunks that wait for the client
        to read (the ids stay admitted until the last one is handed over)."""
        self.last_response_at_start(cycle)

        async def send() -> None:
            try:
                await send_response(cast(Send, cycle.send), response)
            except BaseException:
                self.transport.close()  # as uvicorn's run_asgi: never a half-sent answer kept open
                raise
            finally:
                admission.release()

        context = contextvars.Context() if self._fresh_context else None
        task = self.loop.create_task(send(), context=context)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
