"""``embedding-service push``: write a table's rows into Redis under its version, then flip.

A version that is not complete is (re)written in full: one ``MSET`` per hash tag per chunk,
pipelined per node, ``CHUNKS_IN_FLIGHT`` chunks at once, a heartbeat every few chunks so
that a drop-old leaves the version alone while it is written. Then one replica of each
master is waited for, and the flip script makes the version complete and current at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
from service.publishing import states
from service.publishing.replicas import wait_for_replicas
from service.publishing.source import RowBlock, load_table_file, served_rows, table_version

CHUNK_ROWS = 8192
CHUNKS_IN_FLIGHT = 4
# A push refreshes its version's heartbeat_at every this many chunks: far more often than
# the shortest grace (states.MIN_GRACE_SECONDS) allows.
HEARTBEAT_EVERY_CHUNKS = 4
TIMEOUT_S = 30.0  # of every Redis call of a push or a drop-old


class PushConflict(RuntimeError):
    """A push and a ``--drop-old`` met on one version; ``current`` was left as it was."""


@dataclass(frozen=True)
class PushResult:
    """What a push did: the version now current, and whether rows were written."""

    version: str
    rows: int
    written: bool
    previous: str | None


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
    block, dtype = served_rows(weights)
    rows, dim = weights.rows, weights.dim
    version = table_version(block, rows, dtype)
    layout = RedisLayout(name)
    client = await connect(url, TIMEOUT_S)
    try:
        if await _is_current(client, layout, version):
            return PushResult(version, rows, False, version)
        record = version_record(rows, dim, dtype, tags, "writing")
        state = (await client.eval(states.BEGIN, 1, layout.versions, version, record)).decode()
        if state == "deleting":
            raise PushConflict(
                f"version {version} of {name} is being removed by --drop-old (or by one "
                "that stopped half-way); nothing changed. Let it finish (run "
                "`push --drop-old` if none is running), then push again"
            )
        written = state == "writing"
        if written:  # a version that is not complete is (re)written in full
            await _write_rows(client, layout, version, tags, block, rows, progress)
            await wait_for_replicas(client, layout.row_keys(version, tags), block, rows)
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
    reply = await client.eval(states.FLIP, 2, layout.pointer, layout.versions, version)
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
    if not await client.eval(states.PUSH_HEARTBEAT, 1, layout.versions, version):
        raise PushConflict(
            f"version {version} of {layout.name} was claimed by a --drop-old while being "
            "written (this push stalled past the grace?); current is unchanged. Push again"
        )


async def _write_chunk(packed: PackedCommands, keys: RowKeys, start: int, rows: np.ndarray) -> None:
    """One MSET per tag (its keys share a slot), every node's MSETs in one write."""
    ids = np.arange(start, start + rows.shape[0], dtype=np.int64)
    values = np.ascontiguousarray(rows).view(np.uint8).reshape(rows.shape[0], -1)
    _, commands = keys.commands(b"MSET", ids, values)
    await packed.run(commands)


async def _write_rows(
    client: RedisClient,
    layout: RedisLayout,
    version: str,
    tags: int,
    block: RowBlock,
    rows: int,
    progress: bool | None,
) -> None:
    """Write the rows in chunks, ``CHUNKS_IN_FLIGHT`` at once, the heartbeat kept fresh."""
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
