"""Every use of redis-py beyond its documented client API, in one place.

Reads and pushes send pre-packed commands on the client's own connections (no per-key
slot hashing or argument packing in the client): that needs the cluster client's slot map
(``nodes_manager``) and the connections' ``send_packed_command`` / ``read_response``,
undocumented names that any release may change. So redis-py is pinned to the minor release
they were checked on (pyproject.toml), every such name is listed in ``RELIED_ON``, and
tests/unit/dependencies/test_redis_internals.py fails, naming it, when one is gone or no
longer takes the arguments passed here. docs/upgrading.md ("Upgrading redis-py") says how to
move the pin. Nothing else in service/ reaches past redis-py's documented API.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

ReliedOn = tuple[str, str, str | None]
"""``(class, attribute, arguments)``: a name this module uses, and the arguments it passes
when it calls it, as written in the call (``None``: read, not called)."""

RELIED_ON: tuple[ReliedOn, ...] = (
    ("redis.asyncio.cluster.RedisCluster", "nodes_manager", None),
    ("redis.asyncio.cluster.NodesManager", "get_node_from_slot", "slot"),
    ("redis.asyncio.cluster.NodesManager", "initialize", ""),
    ("redis.asyncio.cluster.NodesManager", "connection_kwargs", None),
    ("redis.asyncio.cluster.ClusterNode", "name", None),
    ("redis.asyncio.cluster.ClusterNode", "acquire_connection", ""),
    ("redis.asyncio.cluster.ClusterNode", "release", "conn"),
    ("redis.asyncio.cluster.ClusterNode", "execute_command", "'INFO', section"),
    ("redis.asyncio.connection.ConnectionPool", "get_connection", ""),
    ("redis.asyncio.connection.ConnectionPool", "release", "conn"),
    ("redis.asyncio.connection.ConnectionPool", "connection_kwargs", None),
    ("redis.asyncio.connection.Connection", "send_packed_command", "packed, check_health=False"),
    ("redis.asyncio.connection.Connection", "read_response", "disable_decoding=True"),
    ("redis.asyncio.connection.Connection", "disconnect", "nowait=True"),
)


def reply_timeout_s(client: aioredis.Redis | RedisCluster) -> float | None:
    """How long ``client`` waits for one reply (its ``socket_timeout``; ``None``: forever)."""
    if isinstance(client, RedisCluster):
        options = client.nodes_manager.connection_kwargs
    else:
        options = client.connection_pool.connection_kwargs
    value = options.get("socket_timeout")
    return None if value is None else float(value)


def slot_owner(cluster: RedisCluster, slot: int) -> ClusterNode:
    """The master serving ``slot`` in the client's slot map.

    Raises ``SlotNotCoveredError`` (a ``RedisClusterException``) when the map has none.
    """
    return cluster.nodes_manager.get_node_from_slot(slot)


async def node_info(node: ClusterNode, section: str) -> dict[str, Any]:
    """``INFO section`` of one cluster node itself (not routed by the slot map)."""
    info: dict[str, Any] = await node.execute_command("INFO", section)
    return info


async def refresh_slot_map(cluster: RedisCluster) -> None:
    """Ask the cluster who owns which slot now (after MOVED, a failover, ...)."""
    await cluster.nodes_manager.initialize()


async def exchange_on_node(node: ClusterNode, packed: list[bytes]) -> list[Any]:
    """``exchange`` on a connection of one cluster node (``slot_owner``'s answer)."""
    conn = node.acquire_connection()
    try:
        return await _exchange(conn, packed)
    finally:
        node.release(conn)


async def exchange_on_server(client: aioredis.Redis, packed: list[bytes]) -> list[Any]:
    """``exchange`` on a connection of a one-server client's pool."""
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py: no annotations
    try:
        return await _exchange(conn, packed)
    finally:
        await pool.release(conn)


async def _exchange(conn: Any, packed: list[bytes]) -> list[Any]:
    """Write every command at once, read every reply (raw bytes); a failed connection is dropped."""
    try:
        await conn.send_packed_command(b"".join(packed), check_health=False)
        return [await conn.read_response(disable_decoding=True) for _ in packed]
    except BaseException:
        # Replies may be left unread: the connection's stream is out of step, never reuse it.
        await conn.disconnect(nowait=True)
        raise
