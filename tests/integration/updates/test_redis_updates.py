"""Row updates of Redis tables against real redis-server processes (one node and a cluster)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from redis.asyncio.cluster import RedisCluster

from service.backends.redis_store import RedisLayout, RowReader, connect
from service.errors import BackendUnavailable, IdOutOfRange
from service.publishing.drop import drop_old
from service.publishing.push import push_table
from service.updates.offline import run_update
from service.updates.redis_feed import RedisUpdateFeed, UpdateEvent
from service.updates.redis_keys import BEGIN, UpdateKeys
from service.updates.redis_writer import RedisRowUpdates, VersionMissing
from service.updates.validation import WriteResult, check_update
from tests.support.redis_servers import paused, replicas_of, replicated_pair
from tests.support.tables import random_table

ROWS, DIM = 1000, 8
DEADLINE_S = 30.0
Scenario = Callable[[RedisRowUpdates, str], Awaitable[None]]


@pytest.fixture(params=["single", "cluster"])
def store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"redis_{request.param}")


def _run(store: Any, tmp_path: Path, name: str, scenario: Scenario) -> None:
    """Push a ``ROWS x DIM`` table as ``name``, then run ``scenario(writer, version)``."""
    np.save(tmp_path / f"{name}.npy", random_table(ROWS, DIM, 3))

    async def main() -> None:
        pushed = await push_table(tmp_path / f"{name}.npy", store.url, name, progress=False)
        writer = await RedisRowUpdates.connect(store.url, name)
        try:
            await scenario(writer, pushed.version)
        finally:
            await writer.aclose()

    asyncio.run(main())


async def _read(writer: RedisRowUpdates, ids: list[int]) -> np.ndarray:
    meta = await writer.meta()
    return await RowReader(writer.client, RedisLayout(writer.name), meta).read(np.array(ids), 5.0)


def _rows(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, DIM), value, np.float32)


def test_updates_are_written_and_sequenced(
    store: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(writer: RedisRowUpdates, version: str) -> None:
        first = await writer.write(np.array([1, 500, 999]), _rows(-1, 3), "a")
        second = await writer.write(np.array([500]), _rows(-2))
        assert (first.sequence, second.sequence) == (1, 2)
        assert (await _read(writer, [1, 500, 999, 2]))[:, 0].tolist()[:3] == [-1, -2, -1]
        again = await writer.write(np.array([1]), _rows(-9), "a")
        assert (again.sequence, again.applied) == (1, False)
        assert (await _read(writer, [1]))[0, 0] == -1
        with pytest.raises(IdOutOfRange):
            await writer.write(np.array([ROWS]), _rows(0))
        with pytest.raises(VersionMissing):
            await writer.write(np.array([1]), _rows(0), version="nope")
        feed = RedisUpdateFeed(writer.client, store.url, writer.name, version)
        assert await feed.applied_sequence() == 2
        await feed.aclose()
        if isinstance(writer.client, RedisCluster):  # its masters have replicas: waited for
            assert any(has for _, has in writer._replicated.values())

    with caplog.at_level(logging.WARNING):
        _run(store, tmp_path, "written", scenario)
    assert "no replica acknowledged" not in caplog.text


def test_the_higher_sequence_wins_a_race(store: Any, tmp_path: Path) -> None:
    async def scenario(writer: RedisRowUpdates, version: str) -> None:
        one, two = await asyncio.gather(
            writer.write(np.array([7, 8]), _rows(1, 2)), writer.write(np.array([8]), _rows(2))
        )
        winner = 1 if one.sequence > two.sequence else 2
        assert (await _read(writer, [8]))[0, 0] == winner
        # A late write of an older sequence (a stalled writer) changes nothing.
        meta = await writer.meta()
        stale = await writer.write(np.array([9]), _rows(3))
        late = await writer.write(np.array([9]), _rows(4))
        old = check_update(np.array([9]), _rows(3), ROWS, DIM, meta.dtype)
        await writer._write_rows(meta, stale.sequence, old)
        assert late.sequence > stale.sequence and (await _read(writer, [9]))[0, 0] == 4

    _run(store, tmp_path, "raced", scenario)


async def _next_event(events: Any) -> UpdateEvent:
    event: UpdateEvent = await asyncio.wait_for(anext(events), DEADLINE_S)
    return event


def test_the_feed_yields_each_update_once(store: Any, tmp_path: Path) -> None:
    async def scenario(writer: RedisRowUpdates, version: str) -> None:
        await writer.write(np.array([3]), _rows(0))  # before the feed: not yielded
        feed = RedisUpdateFeed(writer.client, store.url, writer.name, version)
        quiet = RedisUpdateFeed(writer.client, store.url, writer.name, version)
        await feed.start()
        await quiet.start()
        try:
            events = feed.events(poll_interval_s=0.05)
            written = await writer.write(np.array([4, 5]), _rows(1, 2))
            event = await _next_event(events)
            assert (event.sequence, event.ids.tolist()) == (written.sequence, [4, 5])  # type: ignore[union-attr]
            later = await writer.write(np.array([6]), _rows(1))
            event = await _next_event(events)
            assert event.sequence == later.sequence
            # A process whose messages were lost still learns of both, by polling the log.
            polled = await quiet.poll()
            assert [e.sequence for e in polled] == [written.sequence, later.sequence]
            assert await quiet.poll() == []
        finally:
            await feed.aclose()
            await quiet.aclose()

    _run(store, tmp_path, "fed", scenario)


def test_a_reader_behind_the_trimmed_log_drops_everything(store: Any, tmp_path: Path) -> None:
    async def scenario(writer: RedisRowUpdates, version: str) -> None:
        await writer.write(np.array([3]), _rows(0))
        feed = RedisUpdateFeed(writer.client, store.url, writer.name, version)
        await feed.start()
        try:
            await writer.write(np.array([4]), _rows(1))
            await writer.client.xtrim(feed.keys.log, maxlen=0, approximate=False)
            polled = await feed.poll()
            assert polled[0].ids is None and polled[0].sequence == 2
        finally:
            await feed.aclose()

    _run(store, tmp_path, "trimmed", scenario)


@pytest.fixture(params=["replicated", "cluster"])
def with_replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A store whose masters have replicas: a master and its replica, or the cluster
    (each has ``nodes``)."""
    if request.param == "cluster":
        yield request.getfixturevalue("redis_cluster")
        return
    with replicated_pair(tmp_path / "pair") as (master, replica):
        yield SimpleNamespace(url=master.url, nodes=[master, replica])


def test_a_replica_that_does_not_acknowledge_is_a_503_inside_the_client_timeout(
    with_replicas: Any, tmp_path: Path
) -> None:
    store = with_replicas
    np.save(tmp_path / "slow.npy", random_table(ROWS, DIM, 6))

    async def main() -> None:
        await push_table(tmp_path / "slow.npy", store.url, "slow", progress=False)
        # The service's client for a table with redis_timeout_ms = 400: WAIT gets 300 ms.
        writer = RedisRowUpdates(await connect(store.url, 0.4), "slow")
        ids = np.arange(0, 200, 9)  # rows on many tags (every master of the cluster)
        try:
            assert writer.replica_wait_ms == 300
            await writer.meta()
            replicas = replicas_of(store.nodes)  # connected, but acknowledging nothing:
            with paused(replicas), pytest.raises(BackendUnavailable, match="no replica ack"):
                await writer.write(ids, _rows(7, ids.size), "slow-1")
            # Retried with the same update_id (as the 503 says) once the replicas answer:
            # the same sequence, applied whole.
            result = await _retried(lambda: writer.write(ids, _rows(7, ids.size), "slow-1"))
            assert (result.sequence, result.applied) == (1, True)
            assert (await _read(writer, ids.tolist()) == 7).all()
            again = await writer.write(ids, _rows(8, ids.size), "slow-1")
            assert (again.sequence, again.applied) == (1, False)
        finally:
            await writer.aclose()

    asyncio.run(main())


async def _retried(write: Callable[[], Awaitable[WriteResult]]) -> WriteResult:
    """``write()`` again while it answers 503 (replicas catching up), up to a deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return await write()
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def _keys_naming(store: Any, name: str, version: str) -> list[str]:
    """Every key of table ``name`` on any master (or the one server) naming ``version``."""
    nodes = getattr(store, "nodes", [store])
    found = []
    for node in nodes:
        client = node.client()
        if client.info("replication")["role"] == "master":
            keys = (key.decode() for key in client.scan_iter(f"emb:{{{name}*", count=1000))
            found += [key for key in keys if version in key]
    return sorted(found)


async def _age_versions(writer: RedisRowUpdates, seconds: int) -> None:
    """Every timestamp of every version record ``seconds`` in the past (past the grace)."""
    versions = writer.layout.versions
    for version, raw in (await writer.client.hgetall(versions)).items():
        record = json.loads(raw)
        for field in ("started_at", "heartbeat_at", "current_since", "replaced_at"):
            if record.get(field) is not None:
                record[field] = int(record[field]) - seconds
        await writer.client.hset(versions, version, json.dumps(record))


def test_drop_old_removes_the_update_keys_of_the_versions_it_drops(
    store: Any, tmp_path: Path
) -> None:
    async def scenario(writer: RedisRowUpdates, version: str) -> None:
        # Rows of many tags (so rowseq hashes on many slots), an update id, a log entry.
        await writer.write(np.arange(0, 300, 7), _rows(1, 43), "first")
        keys = UpdateKeys.of(writer.name, version)
        assert set(keys.on_table_slot) <= set(_keys_naming(store, writer.name, version))
        assert any(key.endswith(":rowseq") for key in _keys_naming(store, writer.name, version))
        np.save(tmp_path / "next.npy", random_table(ROWS, DIM, 5))
        newer = await push_table(tmp_path / "next.npy", store.url, writer.name, progress=False)
        await writer.write(np.array([1, 2]), _rows(2, 2), "second")  # to the new current
        kept = _keys_naming(store, writer.name, newer.version)
        await _age_versions(writer, 3600)
        assert await drop_old(store.url, writer.name, 30) == [version]
        assert (
            _keys_naming(store, writer.name, version) == []
        )  # rows, sequences, ids, log: all gone
        assert _keys_naming(store, writer.name, newer.version) == kept

    _run(store, tmp_path, "dropped", scenario)


async def _set_state(writer: RedisRowUpdates, version: str, state: str) -> None:
    record = json.loads(await writer.client.hget(writer.layout.versions, version))
    await writer.client.hset(
        writer.layout.versions, version, json.dumps({**record, "state": state})
    )


def test_an_update_racing_a_drop_of_its_version_leaves_no_update_keys(
    store: Any, tmp_path: Path
) -> None:
    async def scenario(writer: RedisRowUpdates, version: str) -> None:
        await writer.write(np.array([1]), _rows(1), "before")
        keys = UpdateKeys.of(writer.name, version)
        meta = await writer.meta(version)

        async def read_before_the_claim(_: str | None = None) -> Any:
            return meta  # the writer checked the version before drop-old claimed it

        writer.meta = read_before_the_claim  # type: ignore[method-assign]
        await _set_state(writer, version, "deleting")  # drop-old's claim
        with pytest.raises(VersionMissing):
            await writer.write(np.array([2]), _rows(2), "during")
        assert await writer.client.hget(keys.state, "id:during") is None
        # Claimed between the update's first and last step: it is not logged or published.
        await _set_state(writer, version, "complete")
        update = check_update(np.array([3]), _rows(3), ROWS, DIM, meta.dtype, "late")
        reply = await writer.client.eval(
            BEGIN, 3, keys.state, keys.update_ids, writer.layout.versions, "late", 10, version
        )
        await _set_state(writer, version, "deleting")
        with pytest.raises(VersionMissing):
            await writer._commit(keys, int(reply[0]), update)
        assert await writer.client.xlen(keys.log) == 1
        assert await writer.client.hget(keys.state, "applied") == b"1"

    _run(store, tmp_path, "claimed", scenario)


def test_the_offline_command_updates_a_redis_table(redis_single: Any, tmp_path: Path) -> None:
    np.save(tmp_path / "offline.npy", random_table(ROWS, DIM, 4))
    asyncio.run(push_table(tmp_path / "offline.npy", redis_single.url, "offline", progress=False))
    np.save(tmp_path / "ids.npy", np.array([10, 20]))
    np.save(tmp_path / "rows.npy", _rows(5, 2))
    outcome = run_update(
        "offline", tmp_path / "ids.npy", tmp_path / "rows.npy", redis_url=redis_single.url
    )
    assert outcome.summary()["sequence"] == 1 and outcome.summary()["rows"] == 2

    async def read() -> np.ndarray:
        client = await connect(redis_single.url, 5.0)
        writer = RedisRowUpdates(client, "offline")
        try:
            return await _read(writer, [10, 20])
        finally:
            await writer.aclose()

    assert (asyncio.run(read()) == 5).all()
