"""The shared per-start state of the workers: requests, acknowledgements, failures, dead peers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.tables import worker_state
from service.tables.worker_state import WorkerState, forget_worker, read_peers


def test_a_request_is_complete_once_every_live_worker_acknowledged(tmp_path: Path) -> None:
    asking, other = WorkerState(tmp_path, os.getpid()), WorkerState(tmp_path, os.getppid())
    for state in (asking, other):
        state.publish()
    asking.request_reload("t", 100)
    asking.acks["t"] = 100
    asking.publish()
    assert other.requests() == {"t": 100}
    assert asking.outcome("t", 100).pending == [os.getppid()]
    other.acks["t"] = 100
    other.publish()
    assert asking.outcome("t", 100).complete


def test_a_failed_worker_is_reported_not_counted_as_done(tmp_path: Path) -> None:
    asking, other = WorkerState(tmp_path, os.getpid()), WorkerState(tmp_path, os.getppid())
    other.errors["t"] = (100, "t.npy: truncated")
    for state in (asking, other):
        state.publish()
    outcome = asking.outcome("t", 100)
    assert outcome.failed == {os.getppid(): "t.npy: truncated"} and not outcome.complete
    assert asking.outcome("t", 101).pending  # an older failure does not answer a newer request


def test_dead_workers_are_ignored_and_forgotten(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    WorkerState(tmp_path, dead_pid).publish()
    alive = WorkerState(tmp_path, os.getpid())
    alive.publish()
    assert alive.outcome("t", 1).pending == [os.getpid()]  # the dead one is not waited for
    forget_worker(tmp_path, dead_pid)
    assert [peer.pid for peer in read_peers(tmp_path)] == [os.getpid()]


def test_without_a_run_dir_a_process_is_its_own_only_peer(tmp_path: Path) -> None:
    lone = WorkerState(None)
    lone.request_reload("t", 5)
    assert lone.requests() == {} and lone.outcome("t", 5).pending == [os.getpid()]
    lone.acks["t"] = 5
    assert lone.outcome("t", 5).complete


def test_two_writes_of_one_process_do_not_share_a_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second publish starting while the first is between its write and its rename (two
    # thread-pool writes of one worker): each must rename its own temp file.
    state = WorkerState(tmp_path, os.getpid())
    real_replace = os.replace
    nested = []

    def replace_after_a_second_write(src: str, dst: str) -> None:
        if not nested:
            nested.append(src)
            state.tables["t"] = "v2"
            state.publish()
        real_replace(src, dst)

    monkeypatch.setattr(worker_state.os, "replace", replace_after_a_second_write)
    state.tables["t"] = "v1"
    state.publish()  # before: FileNotFoundError (the nested write renamed the shared temp)
    assert nested and [peer.tables for peer in read_peers(tmp_path)] == [{"t": "v1"}]
    assert [p.name for p in (tmp_path / "workers").iterdir()] == [f"{os.getpid()}.json"]


def test_encode_snapshots_the_state_when_called(tmp_path: Path) -> None:
    state = WorkerState(tmp_path, os.getpid())
    state.tables["t"] = "v1"
    encoded = state.encode()
    state.tables["t"] = "v2"  # the loop changes the dicts while a thread writes
    state.write(encoded)
    assert read_peers(tmp_path)[0].tables == {"t": "v1"}


def test_a_request_generation_never_goes_backwards(tmp_path: Path) -> None:
    # Worker A took 100 before waiting for its lock, B took 101 and wrote first: A's late write
    # must not lower the request, or B waits for acks >= 101 that never come.
    a, b = WorkerState(tmp_path, os.getpid()), WorkerState(tmp_path, os.getppid())
    b.request_reload("t", 101)
    a.request_reload("t", 100)
    assert a.requests() == {"t": 101}
    a.request_reload("t", 102)
    assert b.requests() == {"t": 102}
    assert not [p for p in (tmp_path / "reload").iterdir() if p.name.endswith(".tmp")]
