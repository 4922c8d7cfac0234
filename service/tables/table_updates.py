"""A served table's row updates, as one worker sees them: write one, follow the others.

``FileTableUpdates`` (``.npy`` and ONNX tables) keeps the version's ``FileUpdateLog`` and this
worker's ``UpdateOverlay``. ``refresh`` reads new update files off the event loop, then on the
loop, in one step with no await between: swaps the overlay state in, publishes it as
``state`` (what ``FinalRows`` patches gathered rows with) and drops the updated ids from the
row-text cache. A request plans its cached texts and takes its overlay state in one step of
the loop too, so it sees an update whole or not at all; rows it gathered before a discard
are never admitted into the cache (``RowTextCache.generation``).

``RedisTableUpdates`` writes through ``RedisRowUpdates`` and follows ``RedisUpdateFeed``:
each event drops its ids from the hot-row cache (``ids=None``: every row).

``attach_updates`` gives a freshly built table its updates (``None``: a kind that refuses
them, int8 tables: ``409 not_updatable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from service import metrics
from service.backends.redis_gather import RedisGatherBackend
from service.backends.redis_store import RedisClient, RedisTableMeta
from service.caches.row_text_cache import RowTextCache
from service.errors import BackendUnavailable, TableLoadError
from service.repository.weights import TableWeights, file_version
from service.tables.served_table import ServedTable
from service.tables.store_clients import StoreClients
from service.updates.base_manifest import FileIdentity, is_compaction_of, served_version
from service.updates.catch_up import OverlayStale
from service.updates.delta_files import DELTA, file_name
from service.updates.file_log import FileUpdateLog, TableShape
from service.updates.overlay import OverlayState, PendingState, UpdateOverlay
from service.updates.redis_feed import RedisUpdateFeed, UpdateEvent
from service.updates.redis_writer import RedisRowUpdates
from service.updates.validation import WriteResult

log = logging.getLogger(__name__)

# A folder mtime this recent may hide a later rename in the same clock tick: look again.
_MTIME_SETTLE_NS = 1_000_000_000
FEED_RETRY_SECONDS = 1.0


def log_update(table: str, version: str, result: WriteResult, update_id: str | None) -> None:
    """The log line and the counter of one written update (not of a repeated update_id)."""
    if not result.applied:
        return
    metrics.ROW_UPDATES.labels(table).inc(result.rows)
    log.info(
        "row update: table=%s version=%s sequence=%d rows=%d update_id=%s",
        table,
        version,
        result.sequence,
        result.rows,
        update_id,
    )


class FileTableUpdates:
    """The update log of a file table version and this worker's overlay of it."""

    def __init__(
        self,
        name: str,
        log_: FileUpdateLog,
        overlay: UpdateOverlay,
        cache: RowTextCache,
        base: FileIdentity,
    ) -> None:
        self.name = name
        self.base = base  # the table file as mapped
        self.log = log_
        self.overlay = overlay
        self.row_cache = cache
        self.state: OverlayState | None = overlay.state
        self._refreshing = asyncio.Lock()
        self._folder_mtime = -1
        self._delay = metrics.ROW_UPDATE_DELAY.labels(name)

    @property
    def version(self) -> str:
        return self.log.version

    @property
    def sequence(self) -> int:
        """``TableInfo.update_sequence``: the newest update this worker serves."""
        return self.overlay.sequence

    async def write(self, ids: np.ndarray, rows: np.ndarray, update_id: str | None) -> WriteResult:
        """Write one update durably, then serve it in this worker before answering."""
        result = await asyncio.to_thread(self.log.write, ids, rows, update_id)
        log_update(self.name, self.version, result, update_id)
        try:
            while self.overlay.sequence < result.sequence:
                await self.refresh()
        except OverlayStale:
            # Durable, but this worker serves it only once it has loaded the compacted file
            # (its follower is on it): the same update_id again answers 200 then.
            raise BackendUnavailable(
                f"table {self.name!r}: the update is durable as sequence {result.sequence}, "
                "and this worker is loading the compacted table file; retry with the same "
                "update_id",
                {"table": self.name, "sequence": result.sequence},
            ) from None
        return result

    async def poll(self) -> None:
        """Refresh when the log folder changed (one ``stat``), or may have."""
        try:
            mtime = os.stat(self.log.folder).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._folder_mtime and time.time_ns() - mtime > _MTIME_SETTLE_NS:
            return
        self._folder_mtime = mtime
        await self.refresh()
        if await asyncio.to_thread(self._base_compacted):
            # Load the compacted base (same version, same answers) so that the rows folded
            # into it leave this worker's overlay: what bounds the overlay's size.
            raise OverlayStale(f"{self.log.table_file}: updates were folded into the base file")

    def _base_compacted(self) -> bool:
        """Whether the table file is now a compaction of this version other than the one mapped."""
        path = self.log.table_file
        try:
            return FileIdentity.of(path) != self.base and is_compaction_of(path, self.version)
        except FileNotFoundError:
            return False

    async def refresh(self) -> None:
        """Read new updates aside, then swap them in and drop their rows from the cache.

        Raises ``OverlayStale`` when the table must be loaded again."""
        async with self._refreshing:
            pending = await asyncio.to_thread(self._prepare)
            if pending is None:
                return
            pending_state, written_at = pending
            ids = self.overlay.install(pending_state)
            # No await from the swap to the discard: no request sees one without the other.
            self.state = self.overlay.state
            if ids.size:
                self.row_cache.discard(ids.tolist())
            now = time.time()
            for moment in written_at:
                self._delay.observe(max(0.0, now - moment))

    def _prepare(self) -> tuple[PendingState, list[float]] | None:
        pending = self.overlay.prepare()
        if pending is None:
            return None
        written_at = []
        for update in pending.files:
            if update.since == update.sequence - 1:  # a delta: its file's mtime is its ack
                with contextlib.suppress(FileNotFoundError):
                    path = self.log.folder / file_name(update.sequence, DELTA)
                    written_at.append(os.stat(path).st_mtime)
        return pending, written_at

    async def close(self) -> None:
        """Nothing runs in the background."""


class RedisTableUpdates:
    """Writes to a Redis table version and drops the rows its updates replace."""

    def __init__(
        self,
        name: str,
        meta: RedisTableMeta,
        client: RedisClient,
        url: str,
        backend: RedisGatherBackend,
    ) -> None:
        self.name = name
        self.version = meta.version
        self.state: OverlayState | None = None  # rows are read from Redis: nothing to patch
        self.sequence = 0
        self._writer = RedisRowUpdates(client, name)
        self._client = client
        self._url = url
        self._backend = backend
        self._task: asyncio.Task[None] | None = None
        self._delay = metrics.ROW_UPDATE_DELAY.labels(name)

    def at_version(self, meta: RedisTableMeta, backend: RedisGatherBackend) -> RedisTableUpdates:
        """The updates of another version of this table (a pinned one): same store, its own
        feed and hot-row cache."""
        return RedisTableUpdates(self.name, meta, self._client, self._url, backend)

    async def write(self, ids: np.ndarray, rows: np.ndarray, update_id: str | None) -> WriteResult:
        """Write one update into Redis (replicas waited for); its rows dropped here at once."""
        result = await self._writer.write(ids, rows, update_id, self.version)
        log_update(self.name, self.version, result, update_id)
        self._backend.cache.discard(result_ids(ids))
        self.sequence = max(self.sequence, result.sequence)
        return result

    async def poll(self) -> None:
        """Start following the update feed (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._follow(), name=f"updates-{self.name}"
            )

    async def _follow(self) -> None:
        """Apply the feed's events forever; a failing store is retried, every row dropped."""
        while True:
            feed = RedisUpdateFeed(self._client, self._url, self.name, self.version)
            try:
                await feed.start()
                self.sequence = max(self.sequence, await feed.applied_sequence())
                self._backend.cache.clear()  # updates before the subscription may be missed
                async for event in feed.events():
                    self.apply(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("table %s: update feed failed (retrying): %r", self.name, exc)
            finally:
                with contextlib.suppress(Exception):
                    await feed.aclose()
            await asyncio.sleep(FEED_RETRY_SECONDS)

    def apply(self, event: UpdateEvent) -> None:
        """Drop the rows ``event`` replaced from the hot-row cache."""
        cache = self._backend.cache
        if event.ids is None:
            cache.clear()
        else:
            cache.discard(event.ids.tolist())
        self.sequence = max(self.sequence, event.sequence)
        if event.acknowledged_at is not None:
            self._delay.observe(max(0.0, time.time() - event.acknowledged_at))

    async def close(self) -> None:
        """Stop following the feed."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def result_ids(ids: np.ndarray) -> list[int]:
    """Ids as Python ints (for the caches' per-id loops)."""
    return [int(i) for i in np.asarray(ids).reshape(-1).tolist()]


TableUpdates = FileTableUpdates | RedisTableUpdates


def file_updates(
    name: str, weights: TableWeights, cache: RowTextCache
) -> tuple[TableWeights, FileTableUpdates | None]:
    """The updates of a file table (blocking: call off the loop), and its weights with the
    version of the log (a compacted base file keeps its version). int8 tables: none."""
    if weights.scales is not None:
        return weights, None  # codes and scales: a float row cannot be written (409)
    path: Path = weights.path
    identity = FileIdentity.of(path)
    if weights.format == "npy" and file_version(path) != weights.version:
        # Replaced while it was mapped: the mapped rows may not be this file's: load again.
        raise TableLoadError(f"{path}: the file changed while it was loaded; retrying")
    version = served_version(path, weights.version)
    log_ = FileUpdateLog(path, version, TableShape(weights.rows, weights.dim, weights.stored_dtype))
    overlay = log_.overlay(base=identity)
    return replace(weights, version=version), FileTableUpdates(name, log_, overlay, cache, identity)


async def attach_updates(table: ServedTable, clients: StoreClients) -> None:
    """Give a freshly built ``table`` its updates (before it serves): the Redis writer and
    feed, or the file log and this worker's overlay (the weights then carry the log's
    version). Left ``None`` for a kind that refuses updates."""
    weights, backend = table.weights, table.backend
    if isinstance(weights, RedisTableMeta):
        url = table.options.redis
        if url is None or not isinstance(backend, RedisGatherBackend):
            return
        client = await clients.client(url, table.options.redis_timeout_ms)
        table.updates = RedisTableUpdates(table.name, weights, client, url, backend)
        return
    served, updates = await asyncio.to_thread(file_updates, table.name, weights, table.row_cache)
    if table.served_version == weights.version:  # a flat table: named by its (log's) version
        table.served_version = served.version
    table.weights = served
    table.updates = updates


CATCH_UP_ROUNDS = 100  # a log that never reaches the old table's sequence is not waited on


def _behind(new: ServedTable, old: ServedTable | None) -> FileTableUpdates | None:
    """``new``'s file updates when they hold fewer updates of the same version than ``old``'s."""
    if old is None or old is new:
        return None
    ours, theirs = new.updates, old.updates
    if not isinstance(ours, FileTableUpdates) or not isinstance(theirs, FileTableUpdates):
        return None
    if ours.version != theirs.version or ours.sequence >= theirs.sequence:
        return None
    return ours


def _keep_row_cache(new: ServedTable, old: ServedTable | None) -> None:
    """When ``new`` serves exactly ``old``'s rows -- the same version at the same update,
    with the same options (a table loaded again after a compaction) -- it takes over
    ``old``'s row-text cache rather than start cold: every text in it is still right. Only
    right before the swap (no await between): later updates are dropped from the cache by
    ``new``'s refreshes, what ``old``'s requests gathered before a drop is never admitted
    (``RowTextCache.generation``), and what they plan after the swap goes to an empty cache
    of ``old``'s own."""
    if old is None or old is new:
        return
    ours, theirs = new.updates, old.updates
    if not isinstance(ours, FileTableUpdates) or not isinstance(theirs, FileTableUpdates):
        return
    if ours.version != theirs.version or ours.sequence != theirs.sequence:
        return
    if new.options != old.options or new.row_cache.repeats_cheap != old.row_cache.repeats_cheap:
        return
    new.row_cache = ours.row_cache = old.row_cache
    # Requests still on the old table may plan later (a group lookup plans member after
    # member, awaiting between) at its old overlay state: from now on into a cache of their
    # own that admits nothing, so no text of theirs lands in the one handed over.
    old.row_cache = theirs.row_cache = RowTextCache(0)


async def catch_up(pairs: list[tuple[ServedTable, ServedTable | None]]) -> None:
    """Refresh each new table's updates until it holds every update its old table (same
    version, being replaced) serves. Returns with no await since its last check, so the swap
    the caller makes next never goes back to an older row (API.md: a worker never serves an
    older value of a row after a newer one). A new table serving the same rows keeps the old
    one's row-text cache."""
    for _ in range(CATCH_UP_ROUNDS):
        behind = [ours for new, old in pairs if (ours := _behind(new, old)) is not None]
        if not behind:
            for new, old in pairs:
                _keep_row_cache(new, old)
            return
        for updates in behind:
            try:
                await updates.refresh()
            except OverlayStale:
                return  # the new table is itself behind a fold: its follower reloads it
    log.warning("a reloaded table did not catch up with the updates of the one it replaces")
