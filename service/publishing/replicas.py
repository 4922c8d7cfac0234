"""Before the flip: wait until one replica of each master holds the pushed rows.

A failover between the flip and replication would promote a replica missing rows of the
current version (reads of them would answer 503); waiting first closes that window.
"""

from __future__ import annotations

import logging

import numpy as np
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import SlotNotCoveredError

from service.backends.redis_internals import node_info, slot_owner
from service.backends.redis_store import PackedCommands, RedisClient, RowKeys
from service.publishing.source import RowBlock

# Wait this long for one replica of each master to hold the rows.
REPLICA_WAIT_MS = 10_000
_LOG = logging.getLogger(__name__)


async def wait_for_replicas(client: RedisClient, keys: RowKeys, block: RowBlock, rows: int) -> None:
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
    owners: dict[str, tuple[ClusterNode, int]] = {}
    for tag in range(min(keys.tags, rows)):  # row ``tag`` has tag ``tag``
        try:
            master = slot_owner(client, keys.slots[tag])
        except SlotNotCoveredError:  # no owner known: nothing to wait for there
            continue
        owners.setdefault(master.name, (master, tag))
    found = []
    for name, (master, row) in owners.items():
        info = await node_info(master, "replication")
        if int(info.get("connected_slaves", 0)):
            found.append((name, row))
    return found
