"""Version lifecycle in a real Redis: push, flip, a half-done push, --drop-old, pick-up."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from service.backends.redis_store import RedisLayout
from service.publishing import push
from tests.support.redis_servers import RedisNode, push_cli, redis_table_toml
from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy

ROWS, DIM = 3000, 8


def _keys_of(node: RedisNode, name: str, version: str) -> int:
    return sum(1 for _ in node.client().scan_iter(f"emb:{{{name}:{version}:*", count=1000))


def _age_versions(node: RedisNode, name: str, seconds: int) -> None:
    """Move every timestamp of every version record ``seconds`` into the past.

    What the grace sees after ``seconds`` without activity, without waiting for it.
    """
    client, versions = node.client(), RedisLayout(name).versions
    for version, raw in client.hgetall(versions).items():
        record = json.loads(raw)
        for field in ("started_at", "heartbeat_at", "current_since", "replaced_at"):
            if record.get(field) is not None:
                record[field] = int(record[field]) - seconds
        client.hset(versions, version, json.dumps(record))


def test_push_is_idempotent_and_flips_the_pointer(tmp_path: Path, redis_single: RedisNode) -> None:
    one = write_npy(tmp_path, "one", random_table(ROWS, DIM, 1))
    two = write_npy(tmp_path, "two", random_table(ROWS, DIM, 2))
    v1 = push_cli(str(one), "--redis", redis_single.url, "--name", "flip")
    assert push_cli(str(one), "--redis", redis_single.url, "--name", "flip") == v1
    v2 = push_cli(str(two), "--redis", redis_single.url, "--name", "flip")
    assert v2 != v1
    client = redis_single.client()
    assert client.get(RedisLayout("flip").pointer) == v2.encode()
    assert _keys_of(redis_single, "flip", v1) == ROWS  # kept until --drop-old


def test_a_push_that_dies_half_way_leaves_current_untouched(
    tmp_path: Path, redis_single: RedisNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = write_npy(tmp_path, "one", random_table(ROWS, DIM, 3))
    two = write_npy(tmp_path, "two", random_table(ROWS * 4, DIM, 4))
    v1 = push_cli(str(one), "--redis", redis_single.url, "--name", "half")
    real_write = push._write_chunk
    calls = 0

    async def dying_write(*args, **kwargs):  # the real write, then the process "dies"
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("killed half-way")
        await real_write(*args, **kwargs)

    monkeypatch.setattr(push, "_write_chunk", dying_write)
    monkeypatch.setattr(push, "CHUNKS_IN_FLIGHT", 1)
    with pytest.raises(ConnectionError):
        asyncio.run(push.push_table(two, redis_single.url, "half", progress=False))
    client = redis_single.client()
    assert client.get(RedisLayout("half").pointer) == v1.encode()
    partial = [v.decode() for v in client.hkeys(RedisLayout("half").versions) if v.decode() != v1]
    assert len(partial) == 1 and _keys_of(redis_single, "half", partial[0]) > 0
    # Within the grace period even a partial version is kept (its push may still run) ...
    push_cli("--redis", redis_single.url, "--name", "half", "--drop-old")
    assert _keys_of(redis_single, "half", partial[0]) > 0
    # ... after it (no heartbeat for longer), --drop-old removes its partial keys; the
    # current version stays whole.
    _age_versions(redis_single, "half", 3600)
    push_cli("--redis", redis_single.url, "--name", "half", "--drop-old")
    assert _keys_of(redis_single, "half", partial[0]) == 0
    assert _keys_of(redis_single, "half", v1) == ROWS
    monkeypatch.undo()
    v2 = push_cli(str(two), "--redis", redis_single.url, "--name", "half")  # restart: completes
    assert client.get(RedisLayout("half").pointer) == v2.encode()


def test_drop_old_keeps_the_current_and_recently_replaced_versions(
    tmp_path: Path, redis_single: RedisNode
) -> None:
    tables = [write_npy(tmp_path, f"t{i}", random_table(ROWS, DIM, 10 + i)) for i in range(3)]
    versions = [push_cli(str(t), "--redis", redis_single.url, "--name", "drop") for t in tables]
    push_cli("--redis", redis_single.url, "--name", "drop", "--drop-old")
    assert all(_keys_of(redis_single, "drop", v) == ROWS for v in versions)  # all within grace
    _age_versions(redis_single, "drop", 3600)
    push_cli("--redis", redis_single.url, "--name", "drop", "--drop-old", "--grace-seconds", "30")
    assert [_keys_of(redis_single, "drop", v) for v in versions] == [0, 0, ROWS]
    hkeys = redis_single.client().hkeys(RedisLayout("drop").versions)
    assert hkeys == [versions[2].encode()]


def test_a_new_version_is_served_soon_and_never_mixed(
    tmp_path: Path, redis_single: RedisNode
) -> None:
    folder = tmp_path / "models"
    old, new = random_table(ROWS, DIM, 31), random_table(ROWS, DIM, 32)
    one, two = write_npy(tmp_path, "one", old), write_npy(tmp_path, "two", new)
    push_cli(str(one), "--redis", redis_single.url, "--name", "live")
    folder.mkdir()
    (folder / "live.toml").write_text(redis_table_toml(redis_single.url, "cache_rows = 100\n"))
    ids = list(range(0, ROWS, 3))
    seen: list[str] = []
    stop = threading.Event()
    with ServerProcess(folder) as server:
        server.wait_ready()

        def watch() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("/v1/tables/live/lookup", json={"ids": ids})
                    if response.status_code != 200:  # a flip never makes a request fail
                        seen.append(f"status {response.status_code}")
                        continue
                    rows = np.array(response.json()["vectors"], dtype=np.float32)
                    if np.array_equal(rows, old[ids]):
                        seen.append("old")
                    elif np.array_equal(rows, new[ids]):
                        seen.append("new")
                    else:
                        seen.append("mixed")

        reader = threading.Thread(target=watch)
        reader.start()
        try:
            v2 = push_cli(str(two), "--redis", redis_single.url, "--name", "live")
            # Typically within a poll or two (0.5 s each); the deadline only bounds a busy box.
            deadline = time.monotonic() + 60
            while (not seen or seen[-1] != "new") and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            reader.join(30)
        assert set(seen) <= {"old", "new"}, sorted(set(seen))
        assert seen[-1] == "new"
        assert httpx.get(f"{server.url}/v1/tables/live").json()["version"] == v2


def test_redis_keys_are_readable_and_spread(redis_single: RedisNode, tmp_path: Path) -> None:
    push_cli(str(write_npy(tmp_path, "k", random_table(300, DIM, 5))), "--redis", redis_single.url)
    client: redis.Redis = redis_single.client()
    version = client.get(RedisLayout("k").pointer).decode()
    assert client.strlen(f"emb:{{k:{version}:042}}:000000000042") == DIM * 4


def test_an_onnx_table_is_pushed_as_the_loader_reads_it(
    tmp_path: Path, redis_single: RedisNode
) -> None:
    from service.repository.demo import gather_onnx_model

    table = random_table(50, DIM, 7)
    path = tmp_path / "graph.onnx"
    path.write_bytes(gather_onnx_model(table))
    version = push_cli(str(path), "--redis", redis_single.url)  # name: the file's stem
    client = redis_single.client()
    assert client.get(RedisLayout("graph").pointer) == version.encode()
    keys = RedisLayout("graph").row_keys(version, 128)
    stored = [client.get(keys.key(i)) for i in range(50)]
    assert np.array_equal(np.frombuffer(b"".join(stored), np.float32).reshape(50, DIM), table)


def test_a_reload_serves_the_new_version_with_a_new_cache(
    tmp_path: Path, redis_single: RedisNode
) -> None:
    """What a reload does on a change (the watcher's or the admin's): a new version, a new cache."""
    folder = tmp_path / "models"
    old, new = random_table(ROWS, DIM, 41), random_table(ROWS, DIM, 42)
    one, two = write_npy(tmp_path, "one", old), write_npy(tmp_path, "two", new)
    push_cli(str(one), "--redis", redis_single.url, "--name", "again")
    folder.mkdir()
    (folder / "again.toml").write_text(redis_table_toml(redis_single.url, "cache_rows = 500\n"))
    ids = list(range(0, ROWS, 5))
    # Not watching: the test, not the version watcher, decides when the reload happens.
    env = {"EMBED_ADMIN_KEY": "adm", "EMBED_RELOAD_WATCH_FILES": "false"}
    with ServerProcess(folder, env=env) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            lookup = {"ids": ids}
            rows = client.post("/v1/tables/again/lookup", json=lookup).json()["vectors"]
            assert np.array_equal(np.array(rows, np.float32), old[ids])  # and now cached
            v2 = push_cli(str(two), "--redis", redis_single.url, "--name", "again")
            source = f"{server.url}/v1/tables/again"
            assert httpx.get(source).json()["version"] != v2  # pinned until reloaded
            reloaded = client.post(
                "/v1/admin/tables/again/reload", headers={"authorization": "Bearer adm"}
            )
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["version"] == v2
            rows = client.post("/v1/tables/again/lookup", json=lookup).json()["vectors"]
            assert np.array_equal(np.array(rows, np.float32), new[ids])


def test_a_pinned_version_is_any_complete_version_still_in_redis(
    tmp_path: Path, redis_single: RedisNode
) -> None:
    old, new = random_table(ROWS, DIM, 21), random_table(ROWS, DIM, 22)
    one, two = write_npy(tmp_path, "one", old), write_npy(tmp_path, "two", new)
    v1 = push_cli(str(one), "--redis", redis_single.url, "--name", "pinned")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "pinned.toml").write_text(redis_table_toml(redis_single.url))
    ids = [0, 7, 11]
    with ServerProcess(folder, env={"EMBED_RELOAD_POLL_SECONDS": "0.1"}) as server:
        server.wait_ready()
        v2 = push_cli(str(two), "--redis", redis_single.url, "--name", "pinned")
        source = f"{server.url}/v1/tables/pinned"
        deadline = time.monotonic() + 60
        while httpx.get(source).json()["versions"] != sorted([v1, v2]):
            assert time.monotonic() < deadline, httpx.get(source).json()
            time.sleep(0.05)
        while httpx.get(source).json()["version"] != v2:
            assert time.monotonic() < deadline, "the new version never became current"
            time.sleep(0.05)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for version, rows in ((v1, old), (v2, new), (None, new)):
                params = {"version": version} if version else {}
                response = client.post("/v1/tables/pinned/lookup", params=params, json={"ids": ids})
                assert response.status_code == 200, response.text
                assert response.headers["x-table-version"] == (version or v2)
                assert np.array_equal(np.array(response.json()["vectors"], np.float32), rows[ids])
            missing = client.post(
                "/v1/tables/pinned/lookup", params={"version": "nope"}, json={"ids": ids}
            )
            assert missing.status_code == 404
            assert missing.json()["error"]["detail"]["versions"] == sorted([v1, v2])
