"""Reload machinery of the registry: publishing, retries after store errors, pinned versions,
a starting worker counted by reloads, settled file sets (fakes for the store)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.exceptions import TimeoutError as RedisTimeout

from service.backends.redis_store import version_record
from service.errors import TableLoadError, TableRemoved
from service.repository.discovery import TableSource, discover_tables
from service.settings import ServiceSettings
from service.tables import registry as registry_module
from service.tables import reloads, store_clients
from service.tables.registry import TableRegistry
from service.tables.store_clients import StoreClients
from service.tables.version_watcher import VersionWatcher
from service.tables.worker_state import WorkerState, read_peers
from tests.support.polling import until
from tests.support.tables import random_table, write_npy

ROWS, DIM = 4, 3


class FakeStore:
    """The few commands a Redis table's load and version pointer use, in memory."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.versions: dict[str, str] = {}
        self.timeouts = 0  # the next n reads of a version's meta time out
        self.after_meta: Callable[[], None] = lambda: None

    def push(self, version: str, flip: bool = True) -> None:
        self.versions[version] = version_record(ROWS, DIM, "float32", 1, "complete")
        if flip:
            self.current = version

    async def get(self, key: bytes | str) -> bytes | None:
        return None if self.current is None else self.current.encode()

    async def hget(self, key: bytes | str, version: str) -> str | None:
        if self.timeouts:
            self.timeouts -= 1
            raise RedisTimeout("Timeout reading from socket")
        raw = self.versions.get(version)
        self.after_meta()
        return raw

    async def hgetall(self, key: bytes | str) -> dict[str, str]:
        return dict(self.versions)

    async def aclose(self) -> None:
        pass


def registry_sources(registry: TableRegistry) -> dict[str, TableSource]:
    return discover_tables(Path(registry.settings.models))[0]


def run_loaded(registry: TableRegistry, body: Callable[[], Awaitable[None]]) -> None:
    """Load ``registry``, run ``body``, and close the registry whatever happens."""

    async def run() -> None:
        await registry.load()
        try:
            await body()
        finally:
            await registry.close()

    asyncio.run(run())


async def assert_serves_its_source(registry: TableRegistry, name: str) -> None:
    """The version ``name`` is served at is its source's current one."""
    source = registry_sources(registry)[name]
    assert registry.served_version(name) == await registry.source_version(source)


def redis_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: FakeStore, **settings: Any
) -> TableRegistry:
    """A repository of one Redis table ``r`` whose store is ``store``."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "r.toml").write_text('redis = "redis://fake:6379"\n')

    async def connect(url: str, timeout_s: float) -> FakeStore:
        return store

    monkeypatch.setattr(store_clients, "connect", connect)
    monkeypatch.setattr(reloads, "TRANSIENT_RETRY_FIRST_SECONDS", 0.0)
    monkeypatch.setattr(registry_module, "REDIS_RETRY_SECONDS", 0.0)
    return make_registry(folder, tmp_path / "run", **settings)


def make_registry(folder: Path, run_dir: Path | None = None, **settings: Any) -> TableRegistry:
    folder.mkdir(parents=True, exist_ok=True)
    settings.setdefault("reload_poll_seconds", 60.0)  # the tests poll by hand
    return TableRegistry(ServiceSettings(models=folder, run_dir=run_dir, **settings))


def test_publish_writes_the_state_as_it_was_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = make_registry(tmp_path / "models", tmp_path / "run")
    registry.state.tables["t"] = "v1"
    real_to_thread = asyncio.to_thread

    async def loop_changes_state_first(func: Callable[..., Any], *args: Any) -> Any:
        registry.state.tables["t"] = "v2"  # the loop moves on while the thread writes
        return await real_to_thread(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", loop_changes_state_first)
    asyncio.run(registry.installed.publish())
    assert read_peers(tmp_path / "run")[0].tables == {"t": "v1"}
    assert read_peers(tmp_path / "run")[0].pid == os.getpid()


def test_a_store_timeout_during_a_reload_is_retried_not_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One timeout reading v2's meta must not leave the worker on v1 until the next push.
    store = FakeStore()
    store.push("v1")
    registry = redis_repository(tmp_path, monkeypatch, store)

    async def scenario() -> None:
        assert registry.get("r").weights.version == "v1"
        store.push("v2")
        store.timeouts = 1
        watcher = VersionWatcher(registry, 0.0, watch_files=True)
        await watcher.poll()  # the reload times out: v1 keeps serving
        assert registry.get("r").weights.version == "v1"
        await watcher.poll()  # tried again (backoff 0 here)
        assert registry.get("r").weights.version == "v2"

    run_loaded(registry, scenario)


def test_a_store_timeout_leaves_a_reload_request_pending_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A peer asked for a reload; a timeout here is not an answer (no 409): retried next poll.
    store = FakeStore()
    store.push("v1")
    registry = redis_repository(tmp_path, monkeypatch, store)

    async def scenario() -> None:
        store.push("v2")
        store.timeouts = 1
        registry.state.request_reload("r", 2**62)
        watcher = VersionWatcher(registry, 0.0, watch_files=False)
        await watcher.poll()
        assert registry.state.errors == {} and registry.state.outcome("r", 2**62).pending
        await watcher.poll()
        assert registry.get("r").weights.version == "v2"
        assert registry.state.outcome("r", 2**62).complete

    run_loaded(registry, scenario)


def test_a_redis_table_records_the_version_it_pinned_not_a_later_pointer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store answers only once the first load gave up (retried in the background); v2 is
    # pushed between pinning v1 and any later read of the pointer.
    store = FakeStore()
    registry = redis_repository(tmp_path, monkeypatch, store)

    def flip_once() -> None:
        store.after_meta = lambda: None
        store.push("v2")

    async def scenario() -> None:
        assert not registry.has("r")
        store.push("v1")
        store.after_meta = flip_once
        await until(lambda: registry.has("r"), "the retried load of r")
        assert registry.get("r").weights.version == "v1"
        assert (registry.served_version("r") or "").startswith("v1:")
        await VersionWatcher(registry, 0.0, watch_files=True).poll()
        assert registry.get("r").weights.version == "v2"
        await assert_serves_its_source(registry, "r")

    run_loaded(registry, scenario)


def test_a_starting_worker_counts_for_reloads_while_it_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A respawned worker serves table a while b still loads: a reload of a asked now by a
    # peer must wait for it (pending), not answer 200 without it.
    folder, run_dir = tmp_path / "models", tmp_path / "run"
    for name in ("a", "b"):
        write_npy(folder, name, random_table(ROWS, DIM))
    asker = WorkerState(run_dir, os.getppid())
    asker.request_reload("a", 5)  # asked before this worker started: answered by its load
    registry = make_registry(folder, run_dir)
    release_b = asyncio.Event()
    real_build = registry._builder.build

    async def slow_b(source: TableSource, version: str | None) -> Any:
        if source.name == "b":
            await release_b.wait()
        return await real_build(source, version)

    monkeypatch.setattr(registry._builder, "build", slow_b)

    async def scenario() -> None:
        loader = asyncio.create_task(registry.load())
        try:
            await until(lambda: registry.has("a"), "table a served")
            # published before its first table, so already there
            assert [(peer.pid, peer.acks) for peer in read_peers(run_dir)] == [
                (os.getpid(), {"a": 5})
            ]
            generation = time.time_ns()
            asker.request_reload("a", generation)
            asker.acks["a"] = generation
            asker.publish()
            assert asker.outcome("a", generation).pending == [os.getpid()]
            release_b.set()
            await loader
            mine = [peer for peer in read_peers(run_dir) if peer.pid == os.getpid()]
            assert sorted(mine[0].tables) == ["a", "b"]
        finally:
            release_b.set()
            await loader
            await registry.close()

    asyncio.run(scenario())


def test_a_file_table_reloads_once_its_files_held_still_for_a_poll(tmp_path: Path) -> None:
    # Two files of one table change one after the other (codes, then options): no poll may
    # load the first with the old second.
    folder = tmp_path / "models"
    write_npy(folder, "t", random_table(ROWS, DIM), options="")
    registry = make_registry(folder)

    async def scenario() -> None:
        watcher = VersionWatcher(registry, 0.0, watch_files=True)
        write_npy(folder, "t", random_table(ROWS + 1, DIM))  # first rename
        await watcher.poll()
        assert registry.get("t").rows == ROWS
        (folder / "t.toml").write_text("# the second file of the change\n")
        await watcher.poll()
        assert registry.get("t").rows == ROWS
        await watcher.poll()  # unchanged since the last poll: settled
        assert registry.get("t").rows == ROWS + 1
        await assert_serves_its_source(registry, "t")

    run_loaded(registry, scenario)


def test_tables_of_one_store_asking_at_once_share_one_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[FakeStore] = []

    async def slow_connect(url: str, timeout_s: float) -> FakeStore:
        await asyncio.sleep(0)  # the other caller runs while this one connects
        made.append(FakeStore())
        return made[-1]

    monkeypatch.setattr(store_clients, "connect", slow_connect)
    pool = StoreClients()

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(pool.client("redis://fake:6379", 100) for _ in range(3)))

    clients = asyncio.run(scenario())
    assert len(made) == 1 and all(client is made[0] for client in clients)


def test_a_reload_during_start_up_is_not_replaced_by_the_start_up_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Start-up reads table t's first version slowly; an admin reload asked meanwhile, after
    # a new version was written, must end with the new version served (not the old one
    # installed over it by the start-up load that finished later).
    folder = tmp_path / "models"
    write_npy(folder, "t", random_table(ROWS, DIM, seed=1))
    registry = make_registry(folder, tmp_path / "run")
    release, mapped = asyncio.Event(), asyncio.Event()
    real_build = registry._builder.build
    builds = 0

    async def slow_first(source: TableSource, version: str | None) -> Any:
        nonlocal builds
        builds += 1
        first = builds == 1
        built = await real_build(source, version)  # the first one maps the old file
        if first:
            mapped.set()
            await release.wait()
        return built

    monkeypatch.setattr(registry._builder, "build", slow_first)

    async def scenario() -> None:
        loader = asyncio.create_task(registry.load())
        try:
            await mapped.wait()  # the start-up load has mapped the first version
            new = random_table(ROWS, DIM, seed=2)
            write_npy(folder, "t.new", new)
            os.replace(folder / "t.new.npy", folder / "t.npy")
            reload = asyncio.create_task(registry.reload("t"))
            await asyncio.sleep(0.05)
            release.set()
            await loader
            await reload
            served = registry.get("t").weights
            assert np.array_equal(np.asarray(served.array), new)
        finally:
            release.set()
            await loader
            await registry.close()

    asyncio.run(scenario())


def test_a_load_error_after_a_store_error_leaves_no_backoff(tmp_path: Path) -> None:
    registry = make_registry(tmp_path / "models")
    registry._reloads.note_failure("t", "v1", RedisTimeout("timed out"))
    assert not registry.retry_due("t")
    registry._reloads.note_failure("t", "v2", TableLoadError("t: not an .npy file"))
    assert registry.retry_due("t") and registry.attempted["t"] == "v2"


def test_reloading_a_table_whose_files_are_gone_raises_table_removed(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_npy(folder, "t", random_table(ROWS, DIM))
    registry = make_registry(folder)

    async def scenario() -> None:
        (folder / "t.npy").unlink()
        with pytest.raises(TableRemoved):
            await registry.reload_local("t")
        assert registry.has("t")  # the loaded version keeps serving
        (folder / "t.npy").write_bytes(b"not an npy file")
        with pytest.raises(TableLoadError) as broken:
            await registry.reload_local("t")
        assert not isinstance(broken.value, TableRemoved)

    run_loaded(registry, scenario)
