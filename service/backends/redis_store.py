"""Rows of a table in Redis (one server or a Redis Cluster): key layout, versions, reads.

Layout (docs/redis.md explains why):

- ``emb:{NAME}:current`` -- the current version (a string); flipped in one ``SET``.
- ``emb:{NAME}:versions`` -- a hash: version -> JSON meta (rows, dim, dtype, tags,
  state ``writing`` | ``complete``, ``replaced_at``). Same hash tag as the pointer,
  so the flip script touches one slot.
- ``emb:{NAME:VERSION:T}:ID`` -- one row per key, its raw little-endian bytes.
  ``T = ID % tags``: ids of one tag share a slot, so a batch becomes one ``MGET``
  per tag, pipelined per node; the ``tags`` tags spread the table over the slots.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, RedisClusterException, RedisError

from service.backends.redis_internals import (
    exchange_on_node,
    exchange_on_server,
    refresh_slot_map,
    slot_owner,
)
from service.errors import BackendUnavailable

RedisClient = aioredis.Redis | RedisCluster
# Errors meaning "the store cannot answer now" (network, failover, timeout, cluster down).
STORE_ERRORS: tuple[type[BaseException], ...] = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
)
DEFAULT_TAGS = 128


@dataclass(frozen=True)
class RedisLayout:
    """Key names of one table; every name is bytes, built once per version."""

    name: str

    @property
    def pointer(self) -> str:
        return f"emb:{{{self.name}}}:current"

    @property
    def versions(self) -> str:
        return f"emb:{{{self.name}}}:versions"

    def row_keys(self, version: str, tags: int) -> RowKeys:
        return RowKeys(self.name, version, tags)


ID_DIGITS = 12  # ids up to 10**12 - 1; fixed width, so every key of a version has one length
_DIGIT_POWERS = 10 ** np.arange(ID_DIGITS - 1, -1, -1, dtype=np.int64)


class RowKeys:
    """Keys ``emb:{NAME:VERSION:TTT}:IIIIIIIIIIII`` of one version, built vectorised.

    Tag and id are zero-padded decimals (readable in redis-cli), so all keys have one
    length and a batch's keys -- or whole RESP commands -- are one numpy array.
    """

    def __init__(self, name: str, version: str, tags: int) -> None:
        self.tags = tags
        width = len(str(tags - 1))
        prefixes = [f"emb:{{{name}:{version}:{t:0{width}d}}}:".encode() for t in range(tags)]
        self.prefixes = np.frombuffer(b"".join(prefixes), np.uint8).reshape(tags, -1)
        self.slots = [key_slot(p) for p in prefixes]
        self.key_length = self.prefixes.shape[1] + ID_DIGITS

    def key(self, row: int) -> bytes:
        return self.matrix(np.array([row], np.int64)).tobytes()

    def fill(self, out: np.ndarray, ids: np.ndarray) -> None:
        """Write the key of each id into the rows of ``out`` (``(n, key_length)`` uint8)."""
        plen = self.prefixes.shape[1]
        out[:, :plen] = self.prefixes[ids % self.tags]
        out[:, plen:] = (ids[:, None] // _DIGIT_POWERS) % 10 + 48

    def matrix(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((ids.size, self.key_length), np.uint8)
        self.fill(out, ids)
        return out

    def bulk_records(self, ids: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """RESP bulk strings of each id's key (and then its value row): ``(n, record)`` uint8."""
        head = b"$%d\r\n" % self.key_length
        tail = b"\r\n"
        width = len(head) + self.key_length + len(tail)
        value_head = b""
        if values is not None:
            value_head = b"$%d\r\n" % values.shape[1]
            width += len(value_head) + values.shape[1] + len(tail)
        out = np.empty((ids.size, width), np.uint8)
        at = _put(out, 0, head)
        self.fill(out[:, at : at + self.key_length], ids)
        at = _put(out, at + self.key_length, tail)
        if values is not None:
            at = _put(out, at, value_head)
            out[:, at : at + values.shape[1]] = values
            _put(out, at + values.shape[1], tail)
        return out

    def commands(
        self, command: bytes, ids: np.ndarray, values: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[tuple[int, bytes]]]:
        """One ``command`` per tag over ``ids`` (MGET keys, or MSET keys and value rows).

        Returns the ids' order in the commands and ``(slot, packed command)`` pairs.
        """
        tag_of = ids % self.tags
        order = np.argsort(tag_of, kind="stable")
        records = self.bulk_records(ids[order], None if values is None else values[order])
        sorted_tags = tag_of[order]
        bounds = np.flatnonzero(np.diff(sorted_tags)) + 1
        starts = np.concatenate(([0], bounds)).tolist()
        stops = [*bounds.tolist(), ids.size]
        per_key = 1 if values is None else 2
        name = b"$%d\r\n%s\r\n" % (len(command), command)
        packed = []
        for start, stop in zip(starts, stops, strict=True):
            head = b"*%d\r\n" % ((stop - start) * per_key + 1) + name
            packed.append(
                (self.slots[int(sorted_tags[start])], head + records[start:stop].tobytes())
            )
        return order, packed


def _put(out: np.ndarray, at: int, constant: bytes) -> int:
    out[:, at : at + len(constant)] = np.frombuffer(constant, np.uint8)
    return at + len(constant)


@dataclass(frozen=True)
class RedisTableMeta:
    """What a served Redis table knows of its version (stands where TableWeights does)."""

    rows: int
    dim: int
    dtype: str
    version: str
    tags: int
    url: str
    format: str = "redis"
    scales: None = None

    @property
    def stored_dtype(self) -> str:
        return self.dtype

    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(self.dtype).itemsize

    @classmethod
    def from_json(cls, version: str, raw: bytes | str, url: str) -> RedisTableMeta:
        meta = json.loads(raw)
        return cls(
            int(meta["rows"]), int(meta["dim"]), str(meta["dtype"]), version, int(meta["tags"]), url
        )


def version_record(rows: int, dim: int, dtype: str, tags: int, state: str, **extra: Any) -> str:
    """The JSON stored for one version in the versions hash."""
    return json.dumps(
        {"rows": rows, "dim": dim, "dtype": dtype, "tags": tags, "state": state, **extra}
    )


async def connect(url: str, timeout_s: float) -> RedisClient:
    """A client for the store at ``url``: a cluster client when that node is in a cluster.

    Raises the store's own errors when it cannot be reached (callers map them).
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    probe = aioredis.Redis.from_url(url, **options)
    try:
        info = await probe.info("cluster")
    finally:
        await probe.aclose()
    if not info.get("cluster_enabled"):
        return aioredis.Redis.from_url(url, **options)
    cluster = RedisCluster.from_url(url, **options)
    try:
        await cluster.initialize()
    except BaseException:
        # Not handed to anyone: close it here, or each retry during an outage leaks one.
        await _close_quietly(cluster)
        raise
    return cluster


async def _close_quietly(client: RedisClient) -> None:
    try:
        await client.aclose()
    except Exception as exc:  # the store is failing already; the original error matters
        logging.getLogger(__name__).debug("closing a Redis client that failed to start: %r", exc)


async def read_current(client: RedisClient, layout: RedisLayout) -> str | None:
    """The current version of the table, ``None`` when none was pushed (one ``GET``)."""
    raw = await client.get(layout.pointer)
    return raw.decode() if isinstance(raw, bytes) else raw


async def read_meta(
    client: RedisClient, layout: RedisLayout, version: str, url: str
) -> RedisTableMeta | None:
    """The meta of a complete version, ``None`` when missing or still being written."""
    raw = await client.hget(layout.versions, version)
    if raw is None or json.loads(raw).get("state") != "complete":
        return None
    return RedisTableMeta.from_json(version, raw, url)


async def complete_versions(
    client: RedisClient, layout: RedisLayout, url: str
) -> dict[str, RedisTableMeta]:
    """Every complete version in the versions hash (pushed, not dropped), by version."""
    records = await client.hgetall(layout.versions)
    metas: dict[str, RedisTableMeta] = {}
    for key, raw in records.items():
        version = key.decode() if isinstance(key, bytes) else str(key)
        if json.loads(raw).get("state") == "complete":
            metas[version] = RedisTableMeta.from_json(version, raw, url)
    return metas


class PackedCommands:
    """Sends pre-packed commands per node in one write, reads the replies back in order.

    The fast path of reads and pushes: no per-key slot hashing or per-argument packing
    in the client (the commands' slots are known from their hash tags). Any error reply
    (MOVED, ASK, CLUSTERDOWN, ...) or connection error is raised; for a cluster it also
    refreshes the slot map in the background, so the next call goes to the new owners.
    """

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.cluster = client if isinstance(client, RedisCluster) else None
        self._refresh: asyncio.Task[None] | None = None

    async def run(self, commands: Sequence[tuple[int, bytes]]) -> list[Any]:
        """Replies of ``(slot, packed command)`` pairs, in order; one round trip per node."""
        if self.cluster is None:
            client = cast(aioredis.Redis, self.client)
            return await exchange_on_server(client, [c for _, c in commands])
        by_node: dict[str, tuple[Any, list[int]]] = {}
        try:
            for n, (slot, _) in enumerate(commands):
                node = slot_owner(self.cluster, slot)
                by_node.setdefault(node.name, (node, []))[1].append(n)
            results = await asyncio.gather(
                *(
                    exchange_on_node(node, [commands[n][1] for n in members])
                    for node, members in by_node.values()
                )
            )
        except STORE_ERRORS:
            self._refresh_slots()
            raise
        replies: list[Any] = [None] * len(commands)
        for (_, members), got in zip(by_node.values(), results, strict=True):
            for n, reply in zip(members, got, strict=True):
                replies[n] = reply
        return replies

    def _refresh_slots(self) -> None:
        if self.cluster is not None and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.get_running_loop().create_task(self._reinitialize())

    async def _reinitialize(self) -> None:
        assert self.cluster is not None
        try:
            await refresh_slot_map(self.cluster)
        except STORE_ERRORS as exc:  # still failing over: the next error tries again
            logging.getLogger(__name__).debug("slot map refresh failed: %r", exc)


class RowReader:
    """Reads rows of one pinned version: one ``MGET`` per tag, one write per node."""

    def __init__(self, client: RedisClient, layout: RedisLayout, meta: RedisTableMeta) -> None:
        self.meta = meta
        self._keys = layout.row_keys(meta.version, meta.tags)
        self._packed = PackedCommands(client)
        self._client = client
        self._dtype = np.dtype(meta.dtype).newbyteorder("<")

    async def read(self, ids: np.ndarray, timeout_s: float) -> np.ndarray:
        """``(len(ids), dim)`` rows of unique ``ids``; ``BackendUnavailable`` if any is not there."""
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    values = await self._fetch(ids)
                except (MovedError, AskError):
                    # Resharding: redis-py follows MOVED/ASK itself (the slot map is refreshed).
                    values = await self._fetch_following_redirects(ids)
        except STORE_ERRORS as exc:
            raise BackendUnavailable(
                "the table's Redis store cannot answer now; retry shortly",
                {"reason": type(exc).__name__},
            ) from None
        size = self.meta.row_bytes
        if any(v is None or len(v) != size for v in values):
            # Restarted empty, flushed, or the version was dropped: never a zero row.
            raise BackendUnavailable(
                "rows of this table's version are missing from Redis; retry shortly",
                {"version": self.meta.version},
            )
        rows = np.frombuffer(b"".join(values), dtype=self._dtype)
        return rows.reshape(len(values), self.meta.dim)

    async def _fetch(self, ids: np.ndarray) -> list[bytes]:
        if self._packed.cluster is None:  # one server: one MGET of every key
            records = self._keys.bulk_records(ids).tobytes()
            command = b"*%d\r\n$4\r\nMGET\r\n" % (ids.size + 1) + records
            return list((await self._packed.run([(0, command)]))[0])
        order, commands = self._keys.commands(b"MGET", ids)
        return _in_request_order(order, await self._packed.run(commands))

    async def _fetch_following_redirects(self, ids: np.ndarray) -> list[bytes]:
        order, commands = self._keys.commands(b"MGET", ids)
        keys = self._keys.matrix(ids[order])
        pipe = self._client.pipeline(transaction=False)
        at = 0
        for _, packed in commands:
            count = int(packed[1 : packed.index(b"\r\n")]) - 1
            pipe.execute_command("MGET", *[k.tobytes() for k in keys[at : at + count]])
            at += count
        return _in_request_order(order, await pipe.execute(raise_on_error=True))


def _in_request_order(order: np.ndarray, replies: list[Any]) -> list[bytes]:
    flat = [v for reply in replies for v in reply]
    values: list[bytes] = [b""] * len(flat)
    for position, value in zip(order.tolist(), flat, strict=True):
        values[position] = value
    return values
