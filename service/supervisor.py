"""Running uvicorn so that a stop loses nothing and says so when it must.

- ``DrainingServer`` (one per worker process): on SIGTERM/SIGINT ``/readyz`` answers 503
  ``draining`` at once; after ``drain_delay_seconds`` it stops accepting (after taking the
  connections already waiting in the listen backlog), finishes every in-flight request
  (bodies flushed to the client) within ``drain_seconds``, and records how many it had to
  cut past that. uvicorn's own shutdown cancels them with one log line and the process still
  exits 0. Idle connections close at once; one that has received a request, or part of one,
  not yet answered is served first (``LimitedHttpToolsProtocol.shutdown``).
- ``Supervisor`` (``--workers`` > 1): uvicorn's multi-worker supervisor, except that it
  forwards SIGHUP to one worker (which reloads every table in every worker, coherently)
  instead of restarting them all, forwards a second SIGTERM (it ends the drain delay), drops an
  exited worker's live metrics and state, closes its copy of the listening socket on stop (the
  port closes once the workers close theirs) and exits non-zero when any worker did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from uvicorn import Config, Server

from service import lifecycle
from service.http.uvicorn_internals import (
    STARTUP_FAILURE,
    Multiprocess,
    Process,
    process_server,
    wait_tasks_to_complete,
)

log = logging.getLogger("service.supervisor")

# At most this long after the drain starts, connections waiting in the listen backlog are
# still accepted (and served) before the listener closes.
ACCEPT_GRACE = 2.0
ACCEPT_MIN = 1.0
EXIT_CUT = 3  # exit status of a worker (and the server) that cut requests at the drain timeout


class DrainingServer(Server):
    """A uvicorn server whose shutdown drains (see the module docstring)."""

    def __init__(self, config: Config, drain_delay_seconds: float = 0.0) -> None:
        super().__init__(config)
        self.drain_delay_seconds = drain_delay_seconds
        self.cut = 0
        self._delay_over = asyncio.Event()
        self._accepting = True  # the drain still takes connections from the listen backlog
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def exit_code(self) -> int:
        """0 after a complete drain, ``EXIT_CUT`` when requests were cut."""
        return EXIT_CUT if self.cut else 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGTERM and self._loop is not None:
            self._loop.call_soon_threadsafe(self._delay_over.set)  # a second SIGTERM
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        lifecycle.begin_drain()
        if self.drain_delay_seconds > 0 and not self.force_exit:
            log.info(
                "draining: /readyz answers 503; still accepting for %s s", self.drain_delay_seconds
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._delay_over.wait(), self.drain_delay_seconds)
        log.info(
            "draining: no new connections; finishing in-flight requests (%d connections)",
            len(self.server_state.connections),
        )
        # From now on every connection, including each one accepted from here on, is told:
        # idle ones close, busy ones close after their last response (Connection: close).
        closer = asyncio.get_running_loop().create_task(self._shut_down_connections())
        # Requests already sent are in flight even if this busy loop has not read them yet:
        # accept what waits in the listen backlog before closing the listener.
        try:
            await self._accept_backlog()
            self._accepting = False
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            await asyncio.wait_for(
                wait_tasks_to_complete(self), timeout=self.config.timeout_graceful_shutdown
            )
        except TimeoutError:
            self._cut_remaining(
                f"drain timeout exceeded ({self.config.timeout_graceful_shutdown} s)"
            )
        finally:
            closer.cancel()
        if self.force_exit and self.server_state.connections:
            self._cut_remaining("forced exit (a second SIGINT)")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _accept_backlog(self) -> None:
        """Let the loop accept and read the connections waiting in the listen backlog (for
        ``ACCEPT_MIN`` seconds at least, at most ``ACCEPT_GRACE`` while clients keep connecting)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() < started + ACCEPT_MIN or (
            self._backlog_waiting() and loop.time() < started + ACCEPT_GRACE
        ):
            await asyncio.sleep(0.02)

    def _backlog_waiting(self) -> bool:
        """True while a listening socket is readable, i.e. has a connection to accept."""
        fds = [sock.fileno() for server in self.servers for sock in server.sockets]
        return bool(fds) and bool(select.select(fds, [], [], 0)[0])

    async def _shut_down_connections(self) -> None:
        """Until cancelled: ``shutdown()`` every connection once.

        The protocol closes an idle connection at once, and keeps one that has received bytes
        of a request not yet answered (a partial or whole head, a body arriving, bytes unread
        in its socket) until its last response, which says ``Connection: close``. While the
        listen backlog is still taken, a connection that has received nothing yet is left
        alone: it was just accepted and its request may be on its way.
        """
        done: set[object] = set()
        while True:
            for connection in list(self.server_state.connections):
                if connection in done:
                    continue
                if self._accepting and getattr(connection, "received_nothing", False):
                    continue
                connection.shutdown()
                done.add(connection)
            await asyncio.sleep(0.02)

    def _cut_remaining(self, why: str) -> None:
        # Every connection still open holds a request (or part of one) not yet answered:
        # idle ones were closed.
        self.cut = max(len(self.server_state.connections), len(self.server_state.tasks))
        log.error(
            "%s: %d in-flight request(s) cut; exiting with status %d", why, self.cut, EXIT_CUT
        )
        for task in self.server_state.tasks:
            task.cancel(msg=why)


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The server re-raises the stop signal after its drain; this makes that a no-op."""


class DrainingWorker(Process):
    """One worker process running a ``DrainingServer``; its exit status says whether it cut."""

    def __init__(self, config: Config, sockets: list[socket.socket], drain_delay: float) -> None:
        self.drain_delay = drain_delay
        super().__init__(config, sockets)

    @property
    def server(self) -> Server:
        return process_server(self, lambda: DrainingServer(self.config, self.drain_delay))

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _ignore)
        threading.Thread(target=self.always_pong, daemon=True).start()
        server = self.server
        assert isinstance(server, DrainingServer)
        server.run(sockets)
        sys.exit(server.exit_code if server.started else STARTUP_FAILURE)


class Supervisor(Multiprocess):
    """uvicorn's multi-worker supervisor with the changes of the module docstring."""

    def __init__(
        self,
        config: Config,
        sockets: list[socket.socket],
        drain_delay: float,
        on_worker_exit: Callable[[int], None],
    ) -> None:
        super().__init__(config, sockets)
        self.drain_delay = drain_delay
        self.on_worker_exit = on_worker_exit
        self.exit_codes: list[int | None] = []

    def _new_worker(self) -> DrainingWorker:
        worker = DrainingWorker(self.config, self.sockets, self.drain_delay)
        worker.start()
        return worker

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            self.processes.append(self._new_worker())

    def _retired(self, process: Process) -> None:
        if process.pid is not None:
            self.exit_codes.append(process.exitcode)
            self.on_worker_exit(process.pid)

    def run_until_stopped(self) -> int:
        """Serve until SIGTERM/SIGINT, drain the workers; 0 when every worker exited 0."""
        log.info("supervisor [%d] starts %d workers", os.getpid(), self.processes_num)
        self.init_processes()
        while not self.should_exit.wait(0.5):
            self.handle_signals()
            self.keep_subprocess_alive()
        self.terminate_all()
        for sock in self.sockets:
            sock.close()  # the port closes once the draining workers have closed theirs too
        while any(p.process.is_alive() for p in self.processes):
            for sig in tuple(self.signal_queue):
                self.signal_queue.remove(sig)
                if sig in (signal.SIGTERM, signal.SIGINT):
                    self._signal_workers(sig)
            time.sleep(0.1)
        for process in self.processes:
            process.join()
            self._retired(process)
        failed = [code for code in self.exit_codes if code not in (0, None)]
        if failed:
            log.error("supervisor: worker exit statuses %s", self.exit_codes)
            return EXIT_CUT if EXIT_CUT in failed else 1
        return 0

    def _signal_workers(self, sig: int, only_one: bool = False) -> None:
        for process in self.processes:
            if process.pid is not None and process.process.is_alive():
                os.kill(process.pid, sig)
                if only_one:
                    return

    def handle_hup(self) -> None:
        log.info("Received SIGHUP: one worker reloads every table in every worker.")
        self._signal_workers(signal.SIGHUP, only_one=True)

    def handle_ttou(self) -> None:
        if self.processes_num <= 1:
            return
        self.processes_num -= 1
        process = self.processes.pop()
        process.terminate()
        process.join()
        self.on_worker_exit(process.pid or 0)

    def handle_ttin(self) -> None:
        self.processes_num += 1
        self.processes.append(self._new_worker())

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung or dead
            process.join()
            self.on_worker_exit(process.pid or 0)
            if process.exitcode == STARTUP_FAILURE:
                log.error("worker [%s] failed to start, stopping the server.", process.pid)
                self.exit_codes.append(STARTUP_FAILURE)
                self.should_exit.set()
                return
            log.info(
                "worker [%s] died (status %s): starting another", process.pid, process.exitcode
            )
            self.processes[idx] = self._new_worker()


def run_server(config: Config, drain_delay: float, run_dir: Path) -> int:
    """Serve ``config`` (one process, or a supervisor and its workers); the exit status."""
    from service import metrics
    from service.tables.worker_state import forget_worker

    def worker_exited(pid: int) -> None:
        metrics.mark_worker_dead(pid)
        forget_worker(run_dir, pid)

    if config.workers > 1:
        supervisor = Supervisor(config, [config.bind_socket()], drain_delay, worker_exited)
        return supervisor.run_until_stopped()
    server = DrainingServer(config, drain_delay)
    server.run()
    if not server.started:
        return STARTUP_FAILURE
    return server.exit_code
