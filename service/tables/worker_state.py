"""What every worker process serves, and the reload requests they share, in one per-start folder.

Layout of ``run_dir`` (created fresh by ``service.cli`` at each start, shared by the workers):

- ``workers/<pid>.json``: one worker's state, ``{"pid", "tables": {name: source version},
  "acks": {name: generation}, "errors": {name: [generation, reason]}}``, replaced atomically
  whenever it changes and removed when the worker stops.
- ``reload/<name>``: the latest reload request for a table, a generation number (nanoseconds
  since the epoch when it was asked). Written under ``reload/.lock`` and never lowered: a
  request that took its number earlier but wrote later must not hide a newer one.

A reload asked of one worker (admin route, SIGHUP) writes a request; every worker's version
watcher sees it, reloads, and acknowledges the generation in its state file; the asking worker
waits until every live worker has acknowledged it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerState:
    """One worker's published state."""

    pid: int
    tables: dict[str, str | None]  # None: its source's version could not be read
    acks: dict[str, int]
    errors: dict[str, tuple[int, str]]


@dataclass(frozen=True)
class ReloadOutcome:
    """How the workers answered one reload request."""

    pending: list[int] = field(default_factory=list)  # live workers that did not acknowledge
    failed: dict[int, str] = field(default_factory=dict)  # worker pid -> why its reload failed

    @property
    def complete(self) -> bool:
        return not self.pending and not self.failed


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (workers share the machine's pid space)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    # A temp name of its own per call (not per process): two writes of one worker (thread-pool
    # publishes) must not replace each other's temp file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_generation(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


class WorkerState:
    """This worker's view of the shared folder (``run_dir`` None: a lone process, no peers)."""

    def __init__(self, run_dir: Path | None, pid: int | None = None) -> None:
        self.pid = pid or os.getpid()
        self._workers = run_dir / "workers" if run_dir else None
        self._requests = run_dir / "reload" if run_dir else None
        for folder in (self._workers, self._requests):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        self.tables: dict[str, str | None] = {}
        self.acks: dict[str, int] = {}
        self.errors: dict[str, tuple[int, str]] = {}

    # ------------------------------------------------------------------ requests
    def request_reload(self, name: str, generation: int) -> None:
        """Ask every worker to reload ``name`` (``generation``: ``time.time_ns()`` when asked)."""
        if self._requests is None:
            return
        with open(self._requests / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # read-max-write is one step across workers
            path = self._requests / name
            latest = max(generation, _read_generation(path))
            _write_atomically(path, str(latest).encode())

    def requests(self) -> dict[str, int]:
        """The latest reload request of every table that has one."""
        if self._requests is None:
            return {}
        found: dict[str, int] = {}
        for path in self._requests.iterdir():
            if path.name.startswith("."):
                continue
            try:
                found[path.name] = int(path.read_text())
            except (OSError, ValueError):
                continue  # replaced while read: seen next time
        return found

    # ------------------------------------------------------------------ own state
    def encode(self) -> bytes:
        """This worker's state as the JSON its peers read (taken on the event loop, which is
        the one that changes the dicts: ``write`` may then run on a thread)."""
        state = {
            "pid": self.pid,
            "tables": self.tables,
            "acks": self.acks,
            "errors": {name: list(value) for name, value in self.errors.items()},
        }
        return json.dumps(state).encode()

    def write(self, encoded: bytes) -> None:
        """Replace this worker's state file with ``encoded`` (from ``encode``)."""
        if self._workers is not None:
            _write_atomically(self._workers / f"{self.pid}.json", encoded)

    def publish(self) -> None:
        """Write this worker's state for its peers (in the calling thread)."""
        self.write(self.encode())

    def withdraw(self) -> None:
        """Remove this worker's state (it stops serving)."""
        if self._workers is not None:
            (self._workers / f"{self.pid}.json").unlink(missing_ok=True)

    # ------------------------------------------------------------------ peers
    def peers(self) -> list[PeerState]:
        """The published state of every live worker, this one included."""
        if self._workers is None:
            return [PeerState(self.pid, self.tables, self.acks, self.errors)]
        return [peer for peer in read_peers(self._workers.parent) if pid_alive(peer.pid)]

    def outcome(self, name: str, generation: int) -> ReloadOutcome:
        """Which live workers have not yet answered reload request ``generation`` of ``name``."""
        pending: list[int] = []
        failed: dict[int, str] = {}
        for peer in self.peers():
            error = peer.errors.get(name)
            if error is not None and error[0] >= generation:
                failed[peer.pid] = error[1]
            elif peer.acks.get(name, 0) < generation:
                pending.append(peer.pid)
        return ReloadOutcome(sorted(pending), failed)


def read_peers(run_dir: Path) -> list[PeerState]:
    """Every worker state file under ``run_dir`` (live or not)."""
    peers = []
    for path in sorted((run_dir / "workers").glob("*.json")):
        try:
            raw = json.loads(path.read_text())
            peers.append(
                PeerState(
                    int(raw["pid"]),
                    dict(raw["tables"]),
                    {k: int(v) for k, v in raw["acks"].items()},
                    {k: (int(v[0]), str(v[1])) for k, v in raw["errors"].items()},
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # removed or replaced while read
    return peers


def forget_worker(run_dir: Path, pid: int) -> None:
    """Remove the state of a worker that exited (called by the supervisor)."""
    (run_dir / "workers" / f"{pid}.json").unlink(missing_ok=True)
