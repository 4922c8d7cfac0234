"""Writing row updates into a pushed Redis table version (key names: ``redis_keys``).

An update: (1) the ``BEGIN`` script, on the table's slot, hands out the next sequence (or
answers a known ``update_id``); (2) per hash tag, one ``WRITE_ROWS`` script writes that tag's
rows and their sequences -- atomic per tag, so per row; every node's scripts go in one write,
followed by ``WAIT 1`` on the same connection for each master that has replicas; (3) the
``COMMIT`` script marks the update done, raises ``applied``, appends it to the update log
stream and publishes it, then ``WAIT`` again for the table slot's master. ``BEGIN`` and
``COMMIT`` refuse a version that is no longer complete (``push --drop-old`` claimed it):
``VersionMissing``, so no sequence, update id or log entry of it comes back behind the
drop (an update already writing its rows as the drop unlinks them may leave those rows and
their ``rowseq`` hashes behind: rows of a version no one serves, like a half push's).

``WAIT`` blocks at most ``replica_wait_ms``: ``REPLICA_WAIT_MS``, and never past three quarters
of the client's reply timeout (a table's ``redis_timeout_ms``), so a replica that does not
acknowledge in time is WAIT's own answer -- ``BackendUnavailable`` (503), retry with the same
``update_id`` -- never the client's timeout cutting the connection.

What a multi-row update guarantees: each row is whole (old or new, never torn), and once the
write answers every row of it is in Redis (on a replica of every master it touched, when there
are replicas). On a cluster its rows lie on many slots: a reader may see some rows new and
others still old while the update is being written -- it is not one transaction. On one server
the same holds between the tags' scripts. A failed write (connection lost, failover) may have
written some rows: retrying it with the same ``update_id`` finishes it under the same sequence.
Racing writers end with the higher sequence's row in every key (``rowseq``).
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import numpy as np
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from service.backends.redis_internals import node_info, reply_timeout_s, slot_owner
from service.backends.redis_store import (
    PackedCommands,
    RedisClient,
    RedisLayout,
    RedisTableMeta,
    RowKeys,
    connect,
    read_current,
    read_meta,
)
from service.errors import BackendUnavailable
from service.updates.redis_keys import (
    BEGIN,
    COMMIT,
    LOG_ENTRIES,
    REMEMBERED_UPDATE_IDS,
    WRITE_ROWS,
    UpdateKeys,
    packed_command,
)
from service.updates.validation import RowUpdate, WriteResult, check_update

REPLICA_WAIT_MS = 10_000  # the longest a write waits for a replica
# The share of the client's reply timeout WAIT may take; the rest is for the round trip
# and the event loop, so WAIT's reply arrives before the client gives up on it.
WAIT_SHARE_OF_TIMEOUT = 0.75
REPLICAS_RECHECK_S = 5.0  # how long a master's count of replicas is trusted
_LOG = logging.getLogger(__name__)


def replica_wait_ms(reply_timeout: float | None) -> int:
    """WAIT's timeout for a client that waits ``reply_timeout`` seconds for a reply
    (``None``: forever): ``REPLICA_WAIT_MS`` at most, inside the reply timeout, at least 1
    (``WAIT`` with 0 would block forever)."""
    if reply_timeout is None:
        return REPLICA_WAIT_MS
    return max(1, min(REPLICA_WAIT_MS, int(reply_timeout * 1000 * WAIT_SHARE_OF_TIMEOUT)))


class VersionMissing(LookupError):
    """The table has no such complete version in Redis (never pushed, or dropped)."""


class RedisRowUpdates:
    """Writes updates to the versions of Redis table ``name`` through ``client``."""

    def __init__(self, client: RedisClient, name: str) -> None:
        self.client = client
        self.name = name
        self.layout = RedisLayout(name)
        self._packed = PackedCommands(client)
        self._replicated: dict[str, tuple[float, bool]] = {}  # master -> (checked at, has any)

    @property
    def replica_wait_ms(self) -> int:
        """How long ``WAIT`` blocks for a replica with this writer's client."""
        return replica_wait_ms(reply_timeout_s(self.client))

    @classmethod
    async def connect(cls, url: str, name: str, timeout_s: float = 30.0) -> RedisRowUpdates:
        """A writer with its own client of the store at ``url`` (``aclose`` it)."""
        return cls(await connect(url, timeout_s), name)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def meta(self, version: str | None = None) -> RedisTableMeta:
        """The meta of ``version`` (default: the current one); ``VersionMissing`` if none."""
        chosen = version or await read_current(self.client, self.layout)
        meta = None if chosen is None else await read_meta(self.client, self.layout, chosen, "")
        if meta is None:
            raise VersionMissing(f"table {self.name} has no complete version {chosen or ''}")
        return meta

    async def write(
        self,
        ids: np.ndarray,
        rows: np.ndarray,
        update_id: str | None = None,
        version: str | None = None,
    ) -> WriteResult:
        """Check, then write one update into ``version`` (default: current); its sequence."""
        meta = await self.meta(version)
        update = check_update(ids, rows, meta.rows, meta.dim, meta.dtype, update_id)
        keys = UpdateKeys.of(self.name, meta.version)
        reply = await self.client.eval(
            BEGIN,
            3,
            keys.state,
            keys.update_ids,
            self.layout.versions,
            update_id or "",
            REMEMBERED_UPDATE_IDS,
            meta.version,
        )
        sequence, state = int(reply[0]), _text(reply[1])
        if state == "missing":
            raise VersionMissing(f"table {self.name} version {meta.version} is being dropped")
        if state == "done":
            return WriteResult(sequence, update.ids.size, False)
        await self._write_rows(meta, sequence, update)
        await self._commit(keys, sequence, update)
        _LOG.info(
            "row update: table=%s version=%s sequence=%d rows=%d update_id=%s",
            self.name,
            meta.version,
            sequence,
            update.ids.size,
            update_id,
        )
        return WriteResult(sequence, update.ids.size, True)

    async def _write_rows(self, meta: RedisTableMeta, sequence: int, update: RowUpdate) -> None:
        """One ``WRITE_ROWS`` per tag, then ``WAIT`` per replicated master, in one go per node."""
        row_keys = RowKeys(self.name, meta.version, meta.tags)
        tags = update.ids % meta.tags
        values = update.rows.view(np.uint8).reshape(update.ids.size, -1)
        commands = []
        for tag in np.unique(tags).tolist():
            chosen = np.flatnonzero(tags == tag)
            names = [key.tobytes() for key in row_keys.matrix(update.ids[chosen])]
            prefix = row_keys.prefixes[tag].tobytes()
            command = packed_command(
                b"EVAL",
                WRITE_ROWS.encode(),
                b"%d" % (len(names) + 1),
                UpdateKeys.of(self.name, meta.version).row_sequences(prefix),
                *names,
                b"%d" % sequence,
                *(b"%d" % i for i in update.ids[chosen].tolist()),
                *(row.tobytes() for row in values[chosen]),
            )
            commands.append((row_keys.slots[tag], command))
        await self._run_and_wait(commands)

    async def _commit(self, keys: UpdateKeys, sequence: int, update: RowUpdate) -> None:
        ids = base64.b64encode(update.ids.astype("<i8").tobytes())
        command = packed_command(
            b"EVAL",
            COMMIT.encode(),
            b"3",
            keys.state.encode(),
            keys.log.encode(),
            self.layout.versions.encode(),
            (update.update_id or "").encode(),
            b"%d" % sequence,
            keys.version.encode(),
            ids,
            keys.channel.encode(),
            b"%d" % LOG_ENTRIES,
        )
        [reply] = await self._run_and_wait([(key_slot(keys.state.encode()), command)])
        if _text(reply[1]) == "missing":
            raise VersionMissing(f"table {self.name} version {keys.version} is being dropped")

    async def _run_and_wait(self, commands: list[tuple[int, bytes]]) -> list[Any]:
        """Run ``commands``; then one replica of each master they touched has them.

        Returns the commands' replies."""
        waits = await self._replicated_slots([slot for slot, _ in commands])
        wait_ms = self.replica_wait_ms
        wait = packed_command(b"WAIT", b"1", b"%d" % wait_ms)
        replies = await self._packed.run([*commands, *((slot, wait) for slot in waits)])
        for acks in replies[len(commands) :]:
            if int(acks) < 1:
                # Durable means on a replica of every master touched (API.md): no 200 before.
                # The same update_id sent again resumes it under the same sequence.
                raise BackendUnavailable(
                    f"no replica acknowledged a row update of {self.name!r} within "
                    f"{wait_ms} ms; retry with the same update_id",
                    {"table": self.name, "replica_wait_ms": wait_ms},
                )
        return replies[: len(commands)]

    async def _replicated_slots(self, slots: list[int]) -> list[int]:
        """One of ``slots`` per master that has replicas (on one server: the last slot)."""
        if not isinstance(self.client, RedisCluster):
            return slots[-1:] if await self._has_replicas("server", None) else []
        owners: dict[str, int] = {}
        for slot in slots:
            owners.setdefault(slot_owner(self.client, slot).name, slot)
        chosen = []
        for name, slot in owners.items():
            if await self._has_replicas(name, slot):
                chosen.append(slot)
        return chosen

    async def _has_replicas(self, master: str, slot: int | None) -> bool:
        """Whether ``master`` (the owner of ``slot``) has a connected replica, re-asked now and then."""
        checked_at, has = self._replicated.get(master, (-REPLICAS_RECHECK_S, False))
        if time.monotonic() - checked_at < REPLICAS_RECHECK_S:
            return has
        if slot is None or not isinstance(self.client, RedisCluster):
            info = await self.client.info("replication")
        else:
            info = await node_info(slot_owner(self.client, slot), "replication")
        has = int(info.get("connected_slaves", 0)) > 0
        self._replicated[master] = (time.monotonic(), has)
        return has


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
