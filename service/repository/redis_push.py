"""``embedding-service push``: write a table's rows into Redis under a new version, then flip.

The version is a hash of the rows (so a push that died half-way and is run again
writes the same keys again: restartable without harm, and pushing an unchanged file
is a no-op). Rows are written in chunks, one ``MSET`` per hash tag, pipelined per
node, several chunks in flight at once; the version turns ``complete`` and current
in one Lua script on the pointer's slot, so readers never see a half-written version.
``--drop-old`` claims a version (state ``deleting``) in a script that re-checks it is
neither current nor active within the grace before any row is unlinked, and the flip
refuses a claimed version: docs/redis.md ("Versions") says what is guaranteed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from redis.asyncio.cluster import ClusterNode, RedisCluster

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
# A push refreshes its version's heartbeat_at every this many chunks (a drop-old
# every this many unlink steps): far more often than the shortest grace allows.
HEARTBEAT_EVERY_CHUNKS = 4
# Versions replaced, written or deleted (heartbeat) less than this long ago are kept by
# --drop-old: requests may still read them, or a push / another drop-old is still at work.
DROP_GRACE_SECONDS = 60
MIN_GRACE_SECONDS = 30
# Before the flip, wait this long for one replica of each master to hold the rows.
REPLICA_WAIT_MS = 10_000
_TIMEOUT_S = 30.0
_LOG = logging.getLogger(__name__)

# The state scripts below all run on the {NAME} slot (pointer and versions hash share
# it), so each is atomic with respect to the others. The states of a version:
# writing -> complete (the flip) and writing|complete -> deleting -> gone (drop-old).
# Its last activity is the latest of its timestamps (Redis server time, seconds).
_LAST_ACTIVITY = """
local function last_activity(rec)
  local last = 0
  for _, field in ipairs({'started_at', 'heartbeat_at', 'current_since', 'replaced_at'}) do
    local t = tonumber(rec[field])
    if t and t > last then last = t end
  end
  return last
end
"""

# Start a push of a version: 'deleting' (refused), 'complete' (rows there: flip only;
# the heartbeat keeps drop-old off it until the flip) or 'writing' (write the rows).
_BEGIN = """
local now = tonumber(redis.call('TIME')[1])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local rec = raw and cjson.decode(raw)
if rec and rec['state'] == 'deleting' then return 'deleting' end
if rec and rec['state'] == 'complete' then
  rec['heartbeat_at'] = now
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
  return 'complete'
end
rec = cjson.decode(ARGV[2])
rec['state'] = 'writing'
rec['started_at'] = now
rec['heartbeat_at'] = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 'writing'
"""

# A push's heartbeat: 0 when drop-old has claimed (or removed) the version meanwhile.
_PUSH_HEARTBEAT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec['state'] == 'deleting' then return 0 end
rec['heartbeat_at'] = tonumber(redis.call('TIME')[1])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 1
"""

# Mark a version complete and make it current, atomically; refused ({'missing'} or
# {'deleting'}) when drop-old has claimed or removed it. Else {'flipped', old or ''}.
_FLIP = """
local now = tonumber(redis.call('TIME')[1])
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {'missing'} end
local rec = cjson.decode(raw)
if rec['state'] == 'deleting' then return {'deleting'} end
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
return {'flipped', old or ''}
"""

# Claim a version for deletion (ARGV: version, grace, token), re-checked here, before any
# row is unlinked: not current, and no activity (replace, push heartbeat, or the heartbeat
# of another drop-old deleting it) for the grace. Returns {'marked', record} or {reason}.
_MARK_DELETING = (
    _LAST_ACTIVITY
    + """
local now = tonumber(redis.call('TIME')[1])
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {'gone'} end
if redis.call('GET', KEYS[1]) == ARGV[1] then return {'current'} end
local rec = cjson.decode(raw)
if now - last_activity(rec) < tonumber(ARGV[2]) then return {'recent'} end
rec['state'] = 'deleting'
rec['deleter'] = ARGV[3]
rec['heartbeat_at'] = now
raw = cjson.encode(rec)
redis.call('HSET', KEYS[2], ARGV[1], raw)
return {'marked', raw}
"""
)

# A drop-old's heartbeat (ARGV: version, token): 0 when its claim was taken over.
_DELETE_HEARTBEAT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec['state'] ~= 'deleting' or rec['deleter'] ~= ARGV[2] then return 0 end
rec['heartbeat_at'] = tonumber(redis.call('TIME')[1])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 1
"""

# Forget a deleted version (ARGV: version, token), only while the claim is still ours.
_FINISH_DELETE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec['state'] ~= 'deleting' or rec['deleter'] ~= ARGV[2] then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


class PushConflict(RuntimeError):
    """A push and a ``--drop-old`` met on one version; ``current`` was left as it was."""


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
    """Write every row of ``path`` under its version, then make that version current.

    Raises ``PushConflict`` (``current`` unchanged) when a ``--drop-old`` is removing the
    version, or claimed it while this push ran.
    """
    weights = load_table_file(path)
    block, dtype = _served_rows(weights)
    rows, dim = weights.rows, weights.dim
    version = table_version(block, rows, dtype)
    layout = RedisLayout(name)
    client = await connect(url, _TIMEOUT_S)
    try:
        if await _is_current(client, layout, version):
            return PushResult(version, rows, False, version)
        record = version_record(rows, dim, dtype, tags, "writing")
        state = (await client.eval(_BEGIN, 1, layout.versions, version, record)).decode()
        if state == "deleting":
            raise PushConflict(
                f"version {version} of {name} is being removed by --drop-old (or by one "
                "that stopped half-way); nothing changed. Let it finish (run "
                "`push --drop-old` if none is running), then push again"
            )
        written = state == "writing"
        if written:  # a version that is not complete is (re)written in full
            await _write_rows(client, layout, version, tags, block, rows, progress)
            await _wait_for_replicas(client, layout.row_keys(version, tags), block, rows)
        previous = await _flip(client, layout, version)
        return PushResult(version, rows, written, previous)
    finally:
        await client.aclose()


async def _is_current(client: RedisClient, layout: RedisLayout, version: str) -> bool:
    """Whether ``version`` is current and complete already (pushing it again: a no-op)."""
    if await read_current(client, layout) != version:
        return False
    raw = await client.hget(layout.versions, version)
    return raw is not None and json.loads(raw).get("state") == "complete"


async def _flip(client: RedisClient, layout: RedisLayout, version: str) -> str | None:
    """Make ``version`` current (the flip script); the previous current version."""
    reply = await client.eval(_FLIP, 2, layout.pointer, layout.versions, version)
    outcome = reply[0].decode()
    if outcome != "flipped":
        state = "removed" if outcome == "missing" else "claimed for removal"
        raise PushConflict(
            f"version {version} of {layout.name} was {state} by a --drop-old while this push "
            "ran (it stalled past the grace?); current is unchanged. Push again"
        )
    return reply[1].decode() or None


async def _heartbeat(client: RedisClient, layout: RedisLayout, version: str) -> None:
    """Refresh the version's ``heartbeat_at``; ``PushConflict`` if drop-old claimed it."""
    if not await client.eval(_PUSH_HEARTBEAT, 1, layout.versions, version):
        raise PushConflict(
            f"version {version} of {layout.name} was claimed by a --drop-old while being "
            "written (this push stalled past the grace?); current is unchanged. Push again"
        )


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
        for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
            if chunk and chunk % HEARTBEAT_EVERY_CHUNKS == 0:
                # Measured from here, not started_at: a long push stays inside the grace.
                await _heartbeat(client, layout, version)
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
        in_flight = set()
        await _heartbeat(client, layout, version)  # claimed during the last chunks: stop here
    finally:
        for task in in_flight:
            task.cancel()
        bar.close()


def _counts_rows(
    update: Callable[[int], object], rows: int
) -> Callable[[asyncio.Task[None]], object]:
    """A chunk task's done-callback: adds its ``rows`` to the progress bar."""
    return lambda _task: update(rows)


async def _wait_for_replicas(
    client: RedisClient, keys: RowKeys, block: Callable[[int, int], np.ndarray], rows: int
) -> None:
    """Wait (up to ``REPLICA_WAIT_MS``) until one replica of each master holds the rows.

    ``WAIT`` counts the replicas that acknowledged the connection's own last write, so
    each master gets one row rewritten (same bytes) and ``WAIT 1`` on one connection,
    after every chunk was answered: its offset covers all the rows that master holds.
    A master without replicas is not waited for; one whose replicas do not answer in
    time is logged (a failover now could lose rows), not fatal.
    """
    targets = await _replicated_masters(client, keys, rows)
    commands: list[tuple[int, bytes]] = []
    wait = b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$%d\r\n%d\r\n" % (
        len(str(REPLICA_WAIT_MS)),
        REPLICA_WAIT_MS,
    )
    for _, row in targets:
        values = np.ascontiguousarray(block(row, row + 1)).view(np.uint8).reshape(1, -1)
        _, [(slot, mset)] = keys.commands(b"MSET", np.array([row], np.int64), values)
        commands += [(slot, mset), (slot, wait)]
    replies = await PackedCommands(client).run(commands) if commands else []
    for (node, _), acks in zip(targets, replies[1::2], strict=True):
        if int(acks) < 1:
            _LOG.warning(
                "no replica of %s acknowledged the rows within %d ms; a failover of it "
                "before they replicate would lose rows (reads of them then answer 503)",
                node,
                REPLICA_WAIT_MS,
            )


async def _replicated_masters(
    client: RedisClient, keys: RowKeys, rows: int
) -> list[tuple[str, int]]:
    """``(master, row)`` for each master with replicas holding rows: ``row`` is one of them.

    Each master is asked for its own count of connected replicas: the client's slot map
    can lag behind a replica that just attached (seen on a freshly created cluster), and
    a push that trusted it skipped that master's wait."""
    if not isinstance(client, RedisCluster):
        info = await client.info("replication")
        return [("the server", 0)] if rows and int(info.get("connected_slaves", 0)) else []
    slots = client.nodes_manager.slots_cache
    owners: dict[str, tuple[ClusterNode, int]] = {}
    for tag in range(min(keys.tags, rows)):  # row ``tag`` has tag ``tag``
        nodes = slots.get(keys.slots[tag], [])
        if nodes:
            owners.setdefault(nodes[0].name, (nodes[0], tag))
    found = []
    for name, (master, row) in owners.items():
        info = await master.execute_command("INFO", "replication")
        if int(info.get("connected_slaves", 0)):
            found.append((name, row))
    return found


async def drop_old(url: str, name: str, grace_seconds: int = DROP_GRACE_SECONDS) -> list[str]:
    """Remove every version but the current one, except those active (replaced, pushed,
    or being deleted by another drop-old) less than ``grace_seconds`` ago; returns the
    versions removed.

    Each version is first claimed (state ``deleting``) by a script that re-checks, on the
    ``{NAME}`` slot, that it is not current and past the grace; only then are its rows
    unlinked, and its record removed last. The flip refuses a ``deleting`` version.
    """
    if grace_seconds < MIN_GRACE_SECONDS:
        raise ValueError(f"grace_seconds must be >= {MIN_GRACE_SECONDS} (got {grace_seconds})")
    layout = RedisLayout(name)
    client = await connect(url, _TIMEOUT_S)
    removed: list[str] = []
    try:
        current = await read_current(client, layout)
        records = await client.hgetall(layout.versions)
        for raw_version in records:
            version = raw_version.decode() if isinstance(raw_version, bytes) else raw_version
            if version != current and await _drop_version(client, layout, version, grace_seconds):
                removed.append(version)
    finally:
        await client.aclose()
    return removed


async def _drop_version(client: RedisClient, layout: RedisLayout, version: str, grace: int) -> bool:
    """Claim, unlink and forget one version; ``False`` when it was kept (or taken over)."""
    token = secrets.token_hex(8)
    reply = await client.eval(
        _MARK_DELETING, 2, layout.pointer, layout.versions, version, grace, token
    )
    if reply[0] != b"marked":
        return False
    record = json.loads(reply[1])
    claimed = await _delete_rows(
        client, layout, version, int(record["rows"]), int(record["tags"]), token
    )
    return claimed and bool(await client.eval(_FINISH_DELETE, 1, layout.versions, version, token))


async def _delete_rows(
    client: RedisClient, layout: RedisLayout, version: str, rows: int, tags: int, token: str
) -> bool:
    """Unlink the version's rows; ``False`` (stopped) if another drop-old took the claim."""
    keys = layout.row_keys(version, tags)
    packed = PackedCommands(client)
    step = CHUNK_ROWS * 4
    for n, start in enumerate(range(0, rows, step)):
        if n and n % HEARTBEAT_EVERY_CHUNKS == 0:
            alive = await client.eval(_DELETE_HEARTBEAT, 1, layout.versions, version, token)
            if not alive:
                _LOG.warning("drop-old of %s %s was taken over; stopped", layout.name, version)
                return False
        ids = np.arange(start, min(rows, start + step), dtype=np.int64)
        await packed.run(keys.commands(b"UNLINK", ids)[1])
    return True
