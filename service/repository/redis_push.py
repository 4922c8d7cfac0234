"""``embedding-service push``: write a table's rows into Redis under a new version, then flip.

The version is a hash of the rows (so a push that died half-way and is run again
writes the same keys again: restartable without harm, and pushing an unchanged file
is a no-op). Rows are written in chunks, one ``MSET`` per hash tag, pipelined per
node, several chunks in flight at once; the version turns ``complete`` and current
in one Lua script on the pointer's slot, so readers never see a half-written version.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from service.backends.redis_store import (
    DEFAULT_TAGS,
    PackedCommands,
    RedisClient,
    RedisLayout,
    RowKeys,
    connect,
    read_current,
    version_record,
)
from service.errors import TableLoadError
from service.repository.npy_loader import load_npy
from service.repository.onnx_loader import load_onnx
from service.repository.weights import TableWeights

CHUNK_ROWS = 8192
CHUNKS_IN_FLIGHT = 4
# Versions replaced less than this long ago are kept by --drop-old (requests may read them).
DROP_GRACE_SECONDS = 60
_TIMEOUT_S = 30.0

# Mark a version complete and make it current, atomically (one slot: the {NAME} tag).
_FLIP = """
local now = tonumber(redis.call('TIME')[1])
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return redis.error_reply('version record missing') end
local rec = cjson.decode(raw)
rec['state'] = 'complete'
rec['replaced_at'] = nil
rec['current_since'] = now
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(rec))
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if old and old ~= ARGV[1] then
  local o = redis.call('HGET', KEYS[2], old)
  if o then
    local r = cjson.decode(o)
    r['replaced_at'] = now
    redis.call('HSET', KEYS[2], old, cjson.encode(r))
  end
end
return old
"""
_NOW = "return tonumber(redis.call('TIME')[1])"


@dataclass(frozen=True)
class PushResult:
    """What a push did: the version now current, and whether rows were written."""

    version: str
    rows: int
    written: bool
    previous: str | None


def _served_rows(weights: TableWeights) -> tuple[Callable[[int, int], np.ndarray], str]:
    """Rows as the service serves them: float tables as stored, int8 ones dequantised."""
    if weights.scales is not None:
        return weights.block, "float32"
    array = weights.array
    return (lambda start, stop: np.ascontiguousarray(array[start:stop])), str(array.dtype)


def table_version(block: Callable[[int, int], np.ndarray], rows: int, dtype: str) -> str:
    """A content hash of the rows (16 hex digits), read chunk by chunk."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{rows}:{dtype}:".encode())
    step = 65536
    for start in range(0, rows, step):
        digest.update(block(start, min(rows, start + step)).tobytes())
    return digest.hexdigest()


def load_table_file(path: Path) -> TableWeights:
    """A table file as the loaders read it (``.npy`` memory-mapped, ``.onnx`` initializer)."""
    if path.suffix == ".onnx":
        return load_onnx(path)
    if path.suffix == ".npy":
        return load_npy(path)
    raise TableLoadError(f"{path}: push takes a .npy or .onnx table")


async def _write_chunk(packed: PackedCommands, keys: RowKeys, start: int, rows: np.ndarray) -> None:
    """One MSET per tag (its keys share a slot), every node's MSETs in one write."""
    ids = np.arange(start, start + rows.shape[0], dtype=np.int64)
    values = np.ascontiguousarray(rows).view(np.uint8).reshape(rows.shape[0], -1)
    _, commands = keys.commands(b"MSET", ids, values)
    await packed.run(commands)


async def push_table(
    path: Path,
    url: str,
    name: str,
    tags: int = DEFAULT_TAGS,
    progress: bool | None = None,
) -> PushResult:
    """Write every row of ``path`` under its version, then make that version current."""
    weights = load_table_file(path)
    block, dtype = _served_rows(weights)
    rows, dim = weights.rows, weights.dim
    version = table_version(block, rows, dtype)
    layout = RedisLayout(name)
    client = await connect(url, _TIMEOUT_S)
    try:
        current = await read_current(client, layout)
        existing = await client.hget(layout.versions, version)
        if current == version:
            return PushResult(version, rows, False, version)
        complete = existing is not None and json.loads(existing).get("state") == "complete"
        if not complete:
            now = int(await client.eval(_NOW, 1, layout.versions))
            record = version_record(rows, dim, dtype, tags, "writing", started_at=now)
            await client.hset(layout.versions, version, record)
            await _write_rows(client, layout, version, tags, block, rows, progress)
        previous = await client.eval(_FLIP, 2, layout.pointer, layout.versions, version)
        return PushResult(version, rows, not complete, previous.decode() if previous else None)
    finally:
        await client.aclose()


async def _write_rows(
    client: RedisClient,
    layout: RedisLayout,
    version: str,
    tags: int,
    block: Callable[[int, int], np.ndarray],
    rows: int,
    progress: bool | None,
) -> None:
    from tqdm import tqdm

    keys = layout.row_keys(version, tags)
    packed = PackedCommands(client)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=rows, unit="rows", unit_scale=True, disable=not show, desc=layout.name)
    in_flight: set[asyncio.Task[None]] = set()
    try:
        for start in range(0, rows, CHUNK_ROWS):
            stop = min(rows, start + CHUNK_ROWS)
            task = asyncio.create_task(_write_chunk(packed, keys, start, block(start, stop)))
            task.add_done_callback(_counts_rows(bar.update, stop - start))
            in_flight.add(task)
            if len(in_flight) >= CHUNKS_IN_FLIGHT:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()
        if in_flight:
            for finished in (await asyncio.wait(in_flight))[0]:
                finished.result()
    finally:
        for task in in_flight:
            task.cancel()
        bar.close()


def _counts_rows(
    update: Callable[[int], object], rows: int
) -> Callable[[asyncio.Task[None]], object]:
    """A chunk task's done-callback: adds its ``rows`` to the progress bar."""
    return lambda _task: update(rows)


async def drop_old(url: str, name: str, grace_seconds: int = DROP_GRACE_SECONDS) -> list[str]:
    """Remove every version but the current one, except those replaced (or started)
    less than ``grace_seconds`` ago; returns the versions removed."""
    layout = RedisLayout(name)
    client = await connect(url, _TIMEOUT_S)
    removed: list[str] = []
    try:
        current = await read_current(client, layout)
        now = int(await client.eval(_NOW, 1, layout.versions))
        # connect() leaves decode_responses off: every reply is bytes.
        records = cast(dict[bytes, bytes], await client.hgetall(layout.versions))
        for raw_version, raw in records.items():
            version = raw_version.decode()
            record = json.loads(raw)
            since = record.get("replaced_at") or record.get("started_at") or 0
            if version == current or now - int(since) < grace_seconds:
                continue
            await _delete_rows(client, layout, version, int(record["rows"]), int(record["tags"]))
            await client.hdel(layout.versions, version)
            removed.append(version)
    finally:
        await client.aclose()
    return removed


async def _delete_rows(
    client: RedisClient, layout: RedisLayout, version: str, rows: int, tags: int
) -> None:
    keys = layout.row_keys(version, tags)
    packed = PackedCommands(client)
    step = CHUNK_ROWS * 4
    for start in range(0, rows, step):
        ids = np.arange(start, min(rows, start + step), dtype=np.int64)
        await packed.run(keys.commands(b"UNLINK", ids)[1])
