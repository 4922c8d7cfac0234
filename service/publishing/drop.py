"""``embedding-service push --drop-old``: remove every version but the current one.

Each version is first claimed (state ``deleting``) by a script that re-checks, on the
``{NAME}`` slot, that it is neither current nor active within the grace; only then are its
rows unlinked, then its row-update keys (``service.updates.redis_keys``: sequence and
update ids, update log, the rows' sequences; each command on one slot), and its record
removed last. The flip refuses a ``deleting`` version, and a
drop-old that stopped half-way is taken over by the next one once its heartbeat is older
than the grace.
"""

from __future__ import annotations

import json
import logging
import secrets

import numpy as np
from redis.crc import key_slot

from service.backends.redis_store import (
    PackedCommands,
    RedisClient,
    RedisLayout,
    connect,
    read_current,
)
from service.publishing import states
from service.publishing.push import TIMEOUT_S
from service.updates.redis_keys import UpdateKeys, packed_command

UNLINK_STEP_ROWS = 32_768  # keys per round of UNLINKs (every node's in one write)
# A drop-old refreshes its claim's heartbeat every this many steps: far more often than
# the shortest grace (states.MIN_GRACE_SECONDS) allows.
HEARTBEAT_EVERY_STEPS = 4
_LOG = logging.getLogger(__name__)


async def drop_old(
    url: str, name: str, grace_seconds: int = states.DROP_GRACE_SECONDS
) -> list[str]:
    """Remove every version but the current one, except those active (replaced, pushed,
    or being deleted by another drop-old) less than ``grace_seconds`` ago; returns the
    versions removed.
    """
    if grace_seconds < states.MIN_GRACE_SECONDS:
        raise ValueError(
            f"grace_seconds must be >= {states.MIN_GRACE_SECONDS} (got {grace_seconds})"
        )
    layout = RedisLayout(name)
    client = await connect(url, TIMEOUT_S)
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
        states.MARK_DELETING, 2, layout.pointer, layout.versions, version, grace, token
    )
    if reply[0] != b"marked":
        return False
    record = json.loads(reply[1])
    tags = int(record["tags"])
    claimed = await _delete_rows(client, layout, version, int(record["rows"]), tags, token)
    if claimed:
        await _delete_update_keys(client, layout, version, tags)
    return claimed and bool(
        await client.eval(states.FINISH_DELETE, 1, layout.versions, version, token)
    )


async def _delete_rows(
    client: RedisClient, layout: RedisLayout, version: str, rows: int, tags: int, token: str
) -> bool:
    """Unlink the version's rows; ``False`` (stopped) if another drop-old took the claim."""
    keys = layout.row_keys(version, tags)
    packed = PackedCommands(client)
    for n, start in enumerate(range(0, rows, UNLINK_STEP_ROWS)):
        if n and n % HEARTBEAT_EVERY_STEPS == 0:
            alive = await client.eval(states.DELETE_HEARTBEAT, 1, layout.versions, version, token)
            if not alive:
                _LOG.warning("drop-old of %s %s was taken over; stopped", layout.name, version)
                return False
        ids = np.arange(start, min(rows, start + UNLINK_STEP_ROWS), dtype=np.int64)
        await packed.run(keys.commands(b"UNLINK", ids)[1])
    return True


async def _delete_update_keys(
    client: RedisClient, layout: RedisLayout, version: str, tags: int
) -> None:
    """Unlink the version's row-update keys: one ``UNLINK`` for those in the table's slot,
    one per tag for the rows' sequences (in that tag's slot); never a cross-slot command."""
    keys = UpdateKeys.of(layout.name, version)
    on_table_slot = [key.encode() for key in keys.on_table_slot]
    commands = [(key_slot(on_table_slot[0]), packed_command(b"UNLINK", *on_table_slot))]
    row_keys = layout.row_keys(version, tags)
    for slot, prefix in zip(row_keys.slots, row_keys.prefixes, strict=True):
        commands.append((slot, packed_command(b"UNLINK", keys.row_sequences(prefix.tobytes()))))
    await PackedCommands(client).run(commands)
