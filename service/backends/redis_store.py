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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

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

    def row_prefixes(self, version: str, tags: int) -> list[bytes]:
        """``prefix[t] + str(id)`` is the key of row ``id`` with ``id % tags == t``."""
        return [f"emb:{{{self.name}:{version}:{t}}}:".encode() for t in range(tags)]

    def row_keys(self, version: str, tags: int, ids: Sequence[int]) -> list[bytes]:
        prefixes = self.row_prefixes(version, tags)
        return [prefixes[i % tags] + b"%d" % i for i in ids]


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
    await cluster.initialize()
    return cluster


async def read_current(client: RedisClient, layout: RedisLayout) -> str | None:
    """The current version of the table, ``None`` when none was pushed (one ``GET``)."""
    raw = await client.get(layout.pointer)
    return raw.decode() if isinstance(raw, bytes) else raw


async def read_meta(
    client: RedisClient, layout: RedisLayout, version: str, url: str
) -> RedisTableMeta | None:
    """The meta of a complete version, ``None`` when missing or still being written."""
    raw = await client.hget(layout.versions, version)  # type: ignore[misc]
    if raw is None or json.loads(raw).get("state") != "complete":
        return None
    return RedisTableMeta.from_json(version, raw, url)


class RowReader:
    """Reads rows of one pinned version: one ``MGET`` per tag, one pipeline per node."""

    def __init__(self, client: RedisClient, layout: RedisLayout, meta: RedisTableMeta) -> None:
        self.client = client
        self.meta = meta
        self._prefixes = layout.row_prefixes(meta.version, meta.tags)
        self._cluster = isinstance(client, RedisCluster)
        self._dtype = np.dtype(meta.dtype).newbyteorder("<")

    async def read(self, ids: np.ndarray, timeout_s: float) -> np.ndarray:
        """``(len(ids), dim)`` rows of unique ``ids``; ``BackendUnavailable`` if any is not there."""
        try:
            async with asyncio.timeout(timeout_s):
                values = await self._fetch(ids)
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
        id_list = ids.tolist()
        prefixes = self._prefixes
        tags = self.meta.tags
        if not self._cluster:
            keys = [prefixes[i % tags] + b"%d" % i for i in id_list]
            return list(await self.client.execute_command("MGET", *keys))
        # Group by tag (= by slot): one MGET per tag, every node's MGETs in one pipeline.
        order = np.argsort(ids % tags, kind="stable")
        sorted_ids = ids[order]
        bounds = np.flatnonzero(np.diff(sorted_ids % tags)) + 1
        pipe = self.client.pipeline(transaction=False)
        for group in np.split(sorted_ids, bounds):
            members = group.tolist()
            prefix = prefixes[members[0] % tags]
            pipe.execute_command("MGET", *[prefix + b"%d" % i for i in members])
        replies = await pipe.execute(raise_on_error=True)
        flat: list[bytes] = [v for reply in replies for v in reply]
        values: list[bytes] = [b""] * len(flat)
        for position, value in zip(order.tolist(), flat, strict=True):
            values[position] = value
        return values
