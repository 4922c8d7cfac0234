"""A worker's side of row updates: ``FileTableUpdates`` and the ``UpdateFollower`` polling it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from service.caches.row_text_cache import RowTextCache
from service.repository.npy_loader import load_npy
from service.results import Timing
from service.tables.table_updates import FileTableUpdates, file_updates
from service.tables.update_follower import UpdateFollower, _compactor, compact_alone
from service.updates import compaction
from service.updates.catch_up import OverlayStale
from service.updates.file_log import FileUpdateLog
from service.usecases.plan import FinalRows

ROWS, DIM = 64, 4


def _served(tmp_path: Path) -> tuple[Any, FileTableUpdates, np.ndarray]:
    table = np.arange(ROWS * DIM, dtype=np.float32).reshape(ROWS, DIM)
    np.save(tmp_path / "t.npy", table)
    weights = load_npy(tmp_path / "t.npy")
    cache = RowTextCache(1 << 20, doorkeeper=False, min_hit_rate=0.0)
    served_weights, updates = file_updates("t", weights, cache)
    assert updates is not None and served_weights.version == weights.version
    batcher = SimpleNamespace(inline=True, gather_inline=None)
    served = SimpleNamespace(
        name="t",
        updates=updates,
        options=SimpleNamespace(max_norm=None),
        batcher=batcher,
        row_cache=cache,
    )
    return served, updates, table


def _offline(tmp_path: Path, ids: list[int], value: float) -> int:
    """Another process writes an update into the same log."""
    log = FileUpdateLog.for_weights(load_npy(tmp_path / "t.npy"))
    rows = np.full((len(ids), DIM), value, np.float32)
    return log.write(np.array(ids), rows).sequence


def _final(served: Any, table: np.ndarray, ids: list[int]) -> np.ndarray:
    rows = FinalRows(served, np.array(ids), "float32", Timing())
    return rows._final(table[ids].copy(), 0.0, 0.0)


def test_the_follower_applies_updates_written_elsewhere_and_drops_their_cached_rows(
    tmp_path: Path,
) -> None:
    served, updates, table = _served(tmp_path)
    cache = updates.row_cache
    plan = cache.plan(np.arange(8, dtype=np.int64))
    cache.render(plan, table[plan.fetch_ids], (8, DIM))
    assert len(cache) == 8
    follower = UpdateFollower(lambda: [served], lambda name: None)
    assert _offline(tmp_path, [2, 5], 9.0) == 1
    asyncio.run(follower.poll_once())
    assert updates.sequence == 1 and updates.state is not None
    assert len(cache) == 6  # rows 2 and 5 dropped, the others kept
    got = _final(served, table, [1, 2, 5])
    assert np.array_equal(got[0], table[1]) and (got[1:] == 9.0).all()


def test_a_plan_keeps_the_overlay_state_it_was_made_with(tmp_path: Path) -> None:
    """A request in flight when an update is applied answers all of it old, never half."""
    served, updates, table = _served(tmp_path)
    before = FinalRows(served, np.array([3, 4]), "float32", Timing())
    _offline(tmp_path, [3, 4], 1.0)
    asyncio.run(updates.refresh())
    assert np.array_equal(before._final(table[[3, 4]].copy(), 0.0, 0.0), table[[3, 4]])
    assert (_final(served, table, [3, 4]) == 1.0).all()


def test_a_stale_overlay_reloads_its_table(tmp_path: Path) -> None:
    served, updates, _ = _served(tmp_path)
    reloaded: list[str] = []

    async def stale() -> None:
        raise OverlayStale("folded")

    updates.poll = stale  # type: ignore[method-assign]
    follower = UpdateFollower(lambda: [served], reloaded.append)
    asyncio.run(follower.poll_once())
    assert reloaded == ["t"]


def test_compaction_runs_in_one_process_at_a_time(tmp_path: Path) -> None:
    _, updates, _ = _served(tmp_path)
    for n in range(compaction.MAX_DELTA_FILES):
        _offline(tmp_path, [n % ROWS], float(n))
    with _compactor(updates.log) as alone:  # another worker compacts now: this one skips
        assert alone
        assert compact_alone(updates.log) == ""
    assert compact_alone(updates.log) != ""
    sequence = updates.log.sequence()
    assert sequence == compaction.MAX_DELTA_FILES  # compaction changes no sequence


def test_a_base_file_compacted_elsewhere_reloads_the_table(tmp_path: Path) -> None:
    """The rows folded into a new base leave the overlay: the table is loaded again (the same
    version), which bounds what a long-running worker holds."""
    _, updates, _ = _served(tmp_path)
    for n in range(compaction.MAX_DELTA_FILES):
        _offline(tmp_path, [n], float(n))
    assert "base" in compaction.compact_if_due(updates.log)
    with pytest.raises(OverlayStale):
        asyncio.run(updates.poll())
    weights = load_npy(tmp_path / "t.npy")
    served_weights, again = file_updates("t", weights, RowTextCache(0))
    assert again is not None and served_weights.version == updates.version
    assert again.sequence == compaction.MAX_DELTA_FILES and again.state is None
    assert np.array_equal(np.asarray(weights.array[:3]), [[0.0] * DIM, [1.0] * DIM, [2.0] * DIM])


def test_a_reloaded_table_catches_up_with_the_updates_of_the_one_it_replaces(
    tmp_path: Path,
) -> None:
    """A table built before the latest updates is refreshed up to the old table's sequence
    before it is swapped in: the worker never goes back to an older row."""
    from service.tables.table_updates import catch_up

    old, old_updates, table = _served(tmp_path)
    new_weights = load_npy(tmp_path / "t.npy")  # the same file, loaded again: one log
    cache = RowTextCache(1 << 20, doorkeeper=False, min_hit_rate=0.0)
    _, new_updates = file_updates("t", new_weights, cache)
    assert new_updates is not None
    new = SimpleNamespace(**{**vars(old), "updates": new_updates})

    async def scenario() -> None:
        _offline(tmp_path, [3], 7.0)
        _offline(tmp_path, [4], 8.0)
        await old_updates.refresh()  # the serving table applied both
        assert old_updates.sequence == 2 and new_updates.sequence == 0
        await catch_up([(new, old)])
        assert new_updates.sequence == 2
        assert np.all(_final(new, table, [3, 4]) == [[7.0] * DIM, [8.0] * DIM])

    asyncio.run(scenario())


def test_a_table_loaded_again_at_the_same_update_keeps_the_row_text_cache(
    tmp_path: Path,
) -> None:
    """A compaction's reload serves the same rows: the new table takes over the warm cache
    (and drops later updates from it); one that serves other rows starts its own."""
    from service.tables.table_updates import catch_up

    old, old_updates, table = _served(tmp_path)
    _offline(tmp_path, [3], 7.0)

    def loaded_again() -> tuple[Any, FileTableUpdates]:
        cache = RowTextCache(1 << 20, doorkeeper=False, min_hit_rate=0.0)
        _, updates = file_updates("t", load_npy(tmp_path / "t.npy"), cache)
        assert updates is not None
        return SimpleNamespace(**{**vars(old), "updates": updates, "row_cache": cache}), updates

    async def scenario() -> None:
        await old_updates.refresh()
        same, same_updates = loaded_again()  # at sequence 1, as the old table
        warm = old.row_cache
        await catch_up([(same, old)])
        assert same.row_cache is warm and same_updates.row_cache is warm
        # The old table's late plans (at its older overlay state) admit nothing into it.
        assert old.row_cache is not warm and not old.row_cache.enabled
        assert old_updates.row_cache is old.row_cache
        cache = warm
        plan = cache.plan(np.array([5], np.int64))
        cache.render(plan, table[plan.fetch_ids], (1, DIM))
        assert len(cache) == 1
        _offline(tmp_path, [5], 9.0)
        await same_updates.refresh()  # the new table's refresh drops the row it replaced
        assert len(cache) == 0
        ahead, ahead_updates = loaded_again()
        _offline(tmp_path, [6], 3.0)
        await ahead_updates.refresh()  # at sequence 3: other rows than the table it replaces
        await catch_up([(ahead, same)])
        assert ahead.row_cache is not warm and same.row_cache is warm

    asyncio.run(scenario())
