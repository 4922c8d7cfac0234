"""What a serving process reads to drop the cached rows of a Redis table that updates replaced.

Each applied update is published on the table's channel and appended to the version's update
log stream (``redis_keys``). ``RedisUpdateFeed.events`` yields an ``UpdateEvent`` per update as
its message arrives, and polls the stream every ``poll_interval_s`` as the safety net for a
message missed (a dropped subscription, a failover): an update is yielded once, by whichever
comes first. When the reader fell behind further than the stream keeps (its last entry seen
was trimmed away), it yields an event with ``ids=None``: drop every cached row.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis

from service.backends.redis_store import RedisClient
from service.updates.redis_keys import UpdateKeys

POLL_INTERVAL_S = 0.25
POLL_BATCH = 1000
_START = "0-0"
LogEntries = list[tuple[bytes, dict[bytes, bytes]]]  # XRANGE's reply: (entry id, fields)


@dataclass(frozen=True)
class UpdateEvent:
    """Rows of ``version`` replaced by update ``sequence`` (``ids=None``: maybe any row)."""

    version: str
    sequence: int
    ids: np.ndarray | None
    acknowledged_at: float | None = None  # Unix time of the update's log entry (Redis's clock)


def _entry(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id ``"ms-n"`` as a comparable pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds, number = text.split("-")
    return int(milliseconds), int(number)


def _ids(encoded: bytes | str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(encoded), "<i8").astype(np.int64)


class RedisUpdateFeed:
    """The updates of one version of Redis table ``name``, from now on (``start`` first)."""

    def __init__(self, client: RedisClient, url: str, name: str, version: str) -> None:
        self.client = client
        self.keys = UpdateKeys.of(name, version)
        # Pub/sub on one node: a PUBLISH on any node of a cluster reaches every node.
        self._subscriber = aioredis.Redis.from_url(url)
        self._pubsub = self._subscriber.pubsub()
        self._last = _START  # the newest log entry seen (by message or poll)
        self._seen: set[tuple[int, int]] = set()  # entries yielded by message, not polled yet

    async def start(self) -> None:
        """Subscribe, and take the log's newest entry as the starting point."""
        await self._pubsub.subscribe(self.keys.channel)
        newest = cast(LogEntries, await self.client.xrevrange(self.keys.log, count=1))
        if newest:
            self._last = newest[0][0].decode()

    async def aclose(self) -> None:
        await self._pubsub.aclose()
        await self._subscriber.aclose()

    async def applied_sequence(self) -> int:
        """The version's ``update_sequence``: the highest update whose rows are all written."""
        raw = await self.client.hget(self.keys.state, "applied")
        return int(raw) if raw is not None else 0

    async def events(self, poll_interval_s: float = POLL_INTERVAL_S) -> AsyncIterator[UpdateEvent]:
        """Every update from ``start`` on, forever: by message at once, by poll at the latest."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + poll_interval_s
        while True:
            wait = max(0.0, next_poll - loop.time())
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is not None and (event := self._from_message(message)) is not None:
                yield event
            if loop.time() >= next_poll:
                for event in await self.poll():
                    yield event
                next_poll = loop.time() + poll_interval_s

    def _from_message(self, message: dict[str, Any]) -> UpdateEvent | None:
        body = json.loads(message["data"])
        entry = _entry(body["entry"])
        if body["version"] != self.keys.version or entry <= _entry(self._last):
            return None
        if entry in self._seen:
            return None
        self._seen.add(entry)
        sequence = int(body["sequence"])
        return UpdateEvent(self.keys.version, sequence, _ids(body["ids"]), entry[0] / 1000)

    async def poll(self) -> list[UpdateEvent]:
        """The updates logged since the last poll that no message brought (the safety net)."""
        events = []
        if await self._missed_some():
            events.append(UpdateEvent(self.keys.version, await self.applied_sequence(), None))
        while True:
            entries = cast(
                LogEntries,
                await self.client.xrange(self.keys.log, min=f"({self._last}", count=POLL_BATCH),
            )
            for entry_id, fields in entries:
                entry = _entry(entry_id)
                if entry not in self._seen:
                    ids = _ids(fields[b"ids"])
                    sequence = int(fields[b"sequence"])
                    event = UpdateEvent(self.keys.version, sequence, ids, entry[0] / 1000)
                    events.append(event)
                self._seen.discard(entry)
                self._last = entry_id.decode()
            if len(entries) < POLL_BATCH:
                last = _entry(self._last)
                self._seen = {entry for entry in self._seen if entry > last}
                return events

    async def _missed_some(self) -> bool:
        """Whether the log was trimmed past the last entry seen (entries after it may be lost).

        The log is trimmed from its oldest end only: while the last entry seen is still
        there, every entry after it is too. A reader that far behind (``LOG_ENTRIES``
        updates between two polls) drops every cached row instead.
        """
        if self._last == _START:
            return False
        kept = await self.client.xrange(self.keys.log, min=self._last, max=self._last)
        return not kept
