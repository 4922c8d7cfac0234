"""Push / flip / --drop-old states against a real redis-server: who may delete what, when.

No waiting for a grace to pass: each test puts the version records in the state it
needs (a heartbeat in the past or now, ``deleting``, ...) and runs the real scripts.
A push is paused at a chosen chunk (or before its flip) by an ``asyncio.Event`` while
a drop-old runs beside it in the same event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from service.backends.redis_store import RedisLayout, connect
from service.publishing import drop as drop_module
from service.publishing import push as push_module
from service.publishing import replicas as replicas_module
from service.publishing.drop import drop_old
from service.publishing.push import PushConflict, push_table
from tests.support.redis_servers import RedisCluster, RedisNode, paused, replicated_pair
from tests.support.tables import random_table, write_npy

ROWS, DIM = 1000, 4
HANG_GUARD_S = 120  # only against a hang; no test depends on how long anything takes


def _keys_of(node: RedisNode, name: str, version: str) -> int:
    return sum(1 for _ in node.client().scan_iter(f"emb:{{{name}:{version}:*", count=1000))


def _record(node: RedisNode, name: str, version: str) -> dict[str, Any] | None:
    raw = node.client().hget(RedisLayout(name).versions, version)
    return None if raw is None else json.loads(raw)


def _set_times(node: RedisNode, name: str, version: str, **ago: int) -> None:
    """Set timestamp fields of a record to ``ago`` seconds before the server's now."""
    client = node.client()
    now = int(client.time()[0])
    record = _record(node, name, version)
    assert record is not None
    record.update({field: now - seconds for field, seconds in ago.items()})
    client.hset(RedisLayout(name).versions, version, json.dumps(record))


def _age_all(node: RedisNode, name: str, version: str) -> None:
    """Every timestamp of the record an hour ago: past any grace."""
    record = _record(node, name, version)
    assert record is not None
    fields = ("started_at", "heartbeat_at", "current_since", "replaced_at")
    _set_times(node, name, version, **{f: 3600 for f in fields if record.get(f) is not None})


def _push(path: Path, node: RedisNode | RedisCluster, name: str) -> str:
    return asyncio.run(push_table(path, node.url, name, progress=False)).version


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """10 chunks of 100 rows, one in flight, a heartbeat every 2: pauses land where asked."""
    monkeypatch.setattr(push_module, "CHUNK_ROWS", 100)
    monkeypatch.setattr(push_module, "CHUNKS_IN_FLIGHT", 1)
    monkeypatch.setattr(push_module, "HEARTBEAT_EVERY_CHUNKS", 2)


class Gate:
    """Pauses ``target`` (an async function of ``module``) on its call matching ``when``."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        module: ModuleType,
        target: str,
        when: Callable[..., bool],
    ) -> None:
        self.reached, self.opened = asyncio.Event(), asyncio.Event()
        real: Callable[..., Awaitable[Any]] = getattr(module, target)

        async def paused(*args: Any) -> Any:
            if when(*args) and not self.opened.is_set():
                self.reached.set()
                await self.opened.wait()
            return await real(*args)

        monkeypatch.setattr(module, target, paused)


def _at_chunk(n: int) -> Callable[..., bool]:
    return lambda _packed, _keys, start, _rows: start == n * push_module.CHUNK_ROWS


async def _beside_paused_push(
    gate: Gate, path: Path, node: RedisNode, name: str, during: Callable[[], Awaitable[Any]]
) -> tuple[Any, BaseException | None]:
    """Start a push, run ``during`` while it is paused at the gate, then let it finish."""
    task = asyncio.create_task(push_table(path, node.url, name, progress=False))
    await asyncio.wait_for(gate.reached.wait(), HANG_GUARD_S)
    result = await during()
    gate.opened.set()
    try:
        await asyncio.wait_for(task, HANG_GUARD_S)
    except PushConflict as exc:
        return result, exc
    return result, None


def _the_other_version(node: RedisNode, name: str, known: str) -> str:
    """The one version of ``name`` recorded besides ``known`` (the push under way)."""
    versions = node.client().hkeys(RedisLayout(name).versions)
    (other,) = [v.decode() for v in versions if v.decode() != known]
    return other


@pytest.mark.usefixtures("small_chunks")
def test_scenario_a_a_long_push_with_a_fresh_heartbeat_is_not_dropped(
    tmp_path: Path, redis_single: RedisNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started an hour ago (longer than the grace) but beating: drop-old leaves it."""
    v1 = _push(write_npy(tmp_path, "one", random_table(ROWS, DIM, 1)), redis_single, "longpush")
    two = write_npy(tmp_path, "two", random_table(ROWS, DIM, 2))
    gate = Gate(monkeypatch, push_module, "_write_chunk", _at_chunk(5))
    v2 = ""

    async def drop() -> list[str]:
        nonlocal v2
        v2 = _the_other_version(redis_single, "longpush", v1)
        # Started an hour ago (what the old drop-old measured), heartbeat now.
        _set_times(redis_single, "longpush", v2, started_at=3600, heartbeat_at=0)
        return await drop_old(redis_single.url, "longpush", 30)

    removed, error = asyncio.run(_beside_paused_push(gate, two, redis_single, "longpush", drop))
    assert removed == [] and error is None  # v1 is current, v2 beating
    client = redis_single.client()
    assert client.get(RedisLayout("longpush").pointer) == v2.encode()
    assert _keys_of(redis_single, "longpush", v2) == ROWS
    assert _record(redis_single, "longpush", v2)["state"] == "complete"  # type: ignore[index]


@pytest.mark.usefixtures("small_chunks")
def test_scenario_a_a_stalled_push_loses_its_version_and_current_stays(
    tmp_path: Path, redis_single: RedisNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No heartbeat for longer than the grace: dropped, and the push then refuses to flip."""
    v1 = _push(write_npy(tmp_path, "one", random_table(ROWS, DIM, 3)), redis_single, "stalled")
    two = write_npy(tmp_path, "two", random_table(ROWS, DIM, 4))
    gate = Gate(monkeypatch, push_module, "_write_chunk", _at_chunk(5))

    async def drop() -> list[str]:
        v2 = _the_other_version(redis_single, "stalled", v1)
        _set_times(redis_single, "stalled", v2, started_at=3600, heartbeat_at=3600)
        return await drop_old(redis_single.url, "stalled", 30)

    removed, error = asyncio.run(_beside_paused_push(gate, two, redis_single, "stalled", drop))
    assert len(removed) == 1 and removed[0] != v1
    assert isinstance(error, PushConflict) and "drop-old" in str(error)
    client = redis_single.client()
    assert client.get(RedisLayout("stalled").pointer) == v1.encode()
    assert _record(redis_single, "stalled", removed[0]) is None
    assert _keys_of(redis_single, "stalled", v1) == ROWS
    # Pushed again, the version is rewritten whole (its stray keys included) and flipped.
    assert _push(two, redis_single, "stalled") == removed[0]
    assert _keys_of(redis_single, "stalled", removed[0]) == ROWS


def test_scenario_b_a_rollback_push_keeps_drop_old_off_its_version(
    tmp_path: Path, redis_single: RedisNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pushing an old complete version again: between its start and its flip it is kept."""
    one = write_npy(tmp_path, "one", random_table(ROWS, DIM, 5))
    v1 = _push(one, redis_single, "rollback")
    v2 = _push(write_npy(tmp_path, "two", random_table(ROWS, DIM, 6)), redis_single, "rollback")
    _age_all(redis_single, "rollback", v1)  # replaced an hour ago: drop-old would take it
    gate = Gate(monkeypatch, push_module, "_flip", lambda *_: True)

    async def drop() -> list[str]:
        return await drop_old(redis_single.url, "rollback", 30)

    removed, error = asyncio.run(_beside_paused_push(gate, one, redis_single, "rollback", drop))
    assert removed == [] and error is None  # the push's start refreshed v1's heartbeat
    assert redis_single.client().get(RedisLayout("rollback").pointer) == v1.encode()
    assert _keys_of(redis_single, "rollback", v1) == ROWS
    assert _keys_of(redis_single, "rollback", v2) == ROWS  # just replaced: in its grace


def test_scenario_b_a_version_being_deleted_is_not_flipped_to(
    tmp_path: Path, redis_single: RedisNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """drop-old claimed v1 first: the rollback push fails, current stays, then it works."""
    one = write_npy(tmp_path, "one", random_table(ROWS, DIM, 7))
    v1 = _push(one, redis_single, "claimed")
    v2 = _push(write_npy(tmp_path, "two", random_table(ROWS, DIM, 8)), redis_single, "claimed")
    _age_all(redis_single, "claimed", v1)
    gate = Gate(
        monkeypatch, drop_module, "_delete_rows", lambda *_: True
    )  # claimed, nothing unlinked yet

    async def scenario() -> None:
        drop = asyncio.create_task(drop_old(redis_single.url, "claimed", 30))
        await asyncio.wait_for(gate.reached.wait(), HANG_GUARD_S)
        assert _record(redis_single, "claimed", v1)["state"] == "deleting"  # type: ignore[index]
        with pytest.raises(PushConflict, match="being removed by --drop-old"):
            await push_table(one, redis_single.url, "claimed", progress=False)
        gate.opened.set()
        assert await asyncio.wait_for(drop, HANG_GUARD_S) == [v1]

    asyncio.run(scenario())
    client = redis_single.client()
    assert client.get(RedisLayout("claimed").pointer) == v2.encode()
    assert (
        _keys_of(redis_single, "claimed", v1) == 0 and _record(redis_single, "claimed", v1) is None
    )
    assert _push(one, redis_single, "claimed") == v1  # rewritten, then flipped
    assert _keys_of(redis_single, "claimed", v1) == ROWS


def test_the_flip_refuses_a_missing_or_deleting_version(redis_single: RedisNode) -> None:
    layout = RedisLayout("refuse")
    client = redis_single.client()
    client.set(layout.pointer, "aaaa")
    client.hset(layout.versions, "bbbb", json.dumps({"rows": 1, "tags": 1, "state": "deleting"}))

    async def flip(version: str) -> None:
        store = await connect(redis_single.url, 5)
        try:
            await push_module._flip(store, layout, version)
        finally:
            await store.aclose()

    for version, said in (("bbbb", "claimed for removal"), ("cccc", "removed")):
        with pytest.raises(PushConflict, match=said):
            asyncio.run(flip(version))
    assert client.get(layout.pointer) == b"aaaa"


def test_drop_old_rechecks_current_before_unlinking(
    tmp_path: Path, redis_single: RedisNode
) -> None:
    """A version that became current after drop-old listed the versions is not claimed."""
    v1 = _push(write_npy(tmp_path, "one", random_table(ROWS, DIM, 9)), redis_single, "recheck")
    _age_all(redis_single, "recheck", v1)

    async def drop_current() -> bool:
        store = await connect(redis_single.url, 5)
        try:
            return await drop_module._drop_version(store, RedisLayout("recheck"), v1, 30)
        finally:
            await store.aclose()

    assert asyncio.run(drop_current()) is False
    assert _keys_of(redis_single, "recheck", v1) == ROWS
    assert _record(redis_single, "recheck", v1)["state"] == "complete"  # type: ignore[index]


def test_a_drop_old_that_stopped_half_way_is_resumed_after_the_grace(
    tmp_path: Path, redis_single: RedisNode
) -> None:
    one = write_npy(tmp_path, "one", random_table(ROWS, DIM, 10))
    v1 = _push(one, redis_single, "resume")
    _push(write_npy(tmp_path, "two", random_table(ROWS, DIM, 11)), redis_single, "resume")
    layout = RedisLayout("resume")
    record = _record(redis_single, "resume", v1)
    assert record is not None
    record.update(state="deleting", deleter="dead0000")  # as a killed drop-old leaves it
    redis_single.client().hset(layout.versions, v1, json.dumps(record))
    _set_times(redis_single, "resume", v1, heartbeat_at=0)  # ... or a live one, beating
    assert asyncio.run(drop_old(redis_single.url, "resume", 30)) == []
    with pytest.raises(PushConflict):  # no push may rewrite it while it is being deleted
        _push(one, redis_single, "resume")
    _age_all(redis_single, "resume", v1)  # its deleter silent for an hour: taken over
    assert asyncio.run(drop_old(redis_single.url, "resume", 30)) == [v1]
    assert _keys_of(redis_single, "resume", v1) == 0


def test_a_drop_old_whose_claim_was_taken_over_stops_unlinking(
    tmp_path: Path, redis_single: RedisNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drop_module, "UNLINK_STEP_ROWS", 100)
    monkeypatch.setattr(drop_module, "HEARTBEAT_EVERY_STEPS", 1)
    v1 = _push(write_npy(tmp_path, "one", random_table(ROWS, DIM, 12)), redis_single, "taken")
    layout = RedisLayout("taken")
    record = _record(redis_single, "taken", v1)
    assert record is not None
    record.update(state="deleting", deleter="someone-else")
    redis_single.client().hset(layout.versions, v1, json.dumps(record))

    async def unlink_with_a_stale_token() -> bool:
        store = await connect(redis_single.url, 5)
        try:
            return await drop_module._delete_rows(store, layout, v1, ROWS, 128, "mine")
        finally:
            await store.aclose()

    assert asyncio.run(unlink_with_a_stale_token()) is False
    assert _keys_of(redis_single, "taken", v1) == ROWS - 100  # the first step only
    assert _record(redis_single, "taken", v1) is not None  # the record is the other one's


def test_grace_seconds_below_30_is_refused(redis_single: RedisNode) -> None:
    drop = ["--redis", redis_single.url, "--name", "x", "--drop-old", "--grace-seconds"]
    for grace in ("0", "-5", "29"):
        result = subprocess.run(
            [sys.executable, "-m", "service", "push", *drop, grace],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[3],
        )
        assert result.returncode == 2 and "at least 30" in result.stderr, result.stderr
    with pytest.raises(ValueError, match=">= 30"):
        asyncio.run(drop_old(redis_single.url, "x", 0))


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisNode, RedisNode]]:
    """A master and its replica (two servers, ``REPLICAOF``), the link up."""
    with replicated_pair(tmp_path, timeout=HANG_GUARD_S) as pair:
        yield pair


def test_push_returns_once_a_replica_holds_every_row(
    tmp_path: Path, replicated: tuple[RedisNode, RedisNode], caplog: pytest.LogCaptureFixture
) -> None:
    master, replica = replicated
    version = _push(write_npy(tmp_path, "one", random_table(ROWS, DIM, 13)), master, "repl")
    # Read at once, no polling: WAIT before the flip made the replica acknowledge the rows.
    assert _keys_of(replica, "repl", version) == ROWS
    assert "no replica" not in caplog.text


def test_push_warns_but_flips_when_no_replica_acknowledges(
    tmp_path: Path,
    replicated: tuple[RedisNode, RedisNode],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    master, replica = replicated
    monkeypatch.setattr(replicas_module, "REPLICA_WAIT_MS", 100)
    with paused([replica]), caplog.at_level(logging.WARNING, logger=replicas_module.__name__):
        # connected, but it acknowledges nothing
        version = _push(write_npy(tmp_path, "one", random_table(ROWS, DIM, 14)), master, "w")
    assert master.client().get(RedisLayout("w").pointer) == version.encode()
    assert "no replica of the server acknowledged the rows within 100 ms" in caplog.text


def test_push_to_a_cluster_waits_for_a_replica_of_every_master(
    tmp_path: Path, redis_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    version = _push(write_npy(tmp_path, "one", random_table(ROWS, DIM, 15)), redis_cluster, "cw")
    assert "no replica" not in caplog.text
    for node in redis_cluster.nodes:  # each replica already has its master's rows
        info = node.client().info("replication")
        if info["role"] == "slave":
            master = next(m for m in redis_cluster.nodes if m.port == info["master_port"])
            assert _keys_of(node, "cw", version) == _keys_of(master, "cw", version) > 0
