"""The race of an update with a request in flight: rows gathered before a ``discard`` (so maybe
the replaced ones) are never admitted into a cache after it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.caches import hot_rows
from service.caches.hot_rows import HotRowCache
from service.caches.row_text_cache import RowTextCache
from tests.unit.caches.row_text_answers import OPT
from tests.unit.caches.row_text_answers import table as table_


@pytest.mark.parametrize("size", [8, 200])  # planned in Python, and with numpy
def test_rows_planned_before_a_discard_are_rendered_but_not_admitted(size: int) -> None:
    table = table_(rows=1000, dim=4)
    cache = RowTextCache(1 << 20, doorkeeper=False, min_hit_rate=0.0)
    ids = np.arange(size, dtype=np.int64)
    plan = cache.plan(ids)  # a request plans (every row a miss) ...
    cache.discard(ids.tolist())  # ... an update is applied meanwhile ...
    old = table[plan.fetch_ids]
    text = cache.render(plan, old, (size, 4))  # ... and it answers with what it gathered
    assert text == orjson.dumps(table[ids], option=OPT)
    assert len(cache) == 0  # but the old rows never enter the cache
    fresh = cache.plan(ids)
    cache.render(fresh, table[fresh.fetch_ids] + 1, (size, 4))
    assert len(cache) == size  # a plan made after the discard admits as usual
    again = cache.plan(ids)
    assert cache.render(again, table[again.fetch_ids], (size, 4)) == orjson.dumps(
        table[ids] + 1, option=OPT
    )


def test_a_spliced_plan_made_before_a_discard_admits_nothing() -> None:
    table = table_(rows=1000, dim=4)
    cache = RowTextCache(1 << 20, doorkeeper=False, min_hit_rate=0.0)
    warm = np.arange(0, 40, dtype=np.int64)
    first = cache.plan(warm)
    cache.render(first, table[first.fetch_ids], (40, 4))
    ids = np.arange(0, 44, dtype=np.int64)  # 40 hits and 4 misses: spliced
    plan = cache.plan(ids)
    assert plan.items is not None and plan.fetch_ids.tolist() == [40, 41, 42, 43]
    cache.discard([41])
    cache.render(plan, table[plan.fetch_ids], (44, 4))
    assert cache.plan(np.array([41, 42], np.int64)).fetch_ids.tolist() == [41, 42]


def test_hot_rows_read_before_a_discard_or_clear_are_not_stored() -> None:
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    cache = HotRowCache(4, 2, np.dtype(np.float32))
    generation = cache.generation  # a read starts ...
    cache.discard([1])  # ... an update drops row 1 ...
    cache.store_if_fresh(generation, [1, 2], table[[1, 2]])  # ... the read ends
    assert cache.lookup([1, 2]).tolist()[0] == -1  # the row read before the update: not kept
    assert len(cache) == 1  # row 2 was not updated: kept (no update starves the cache)
    cache.store_if_fresh(cache.generation, [1, 2], table[[1, 2]])
    assert len(cache) == 2
    generation = cache.generation
    cache.clear()  # an update whose rows are unknown: every row goes
    assert len(cache) == 0 and cache.lookup([1, 2]).tolist() == [-1, -1]
    cache.store_if_fresh(generation, [3], table[[3]])
    assert len(cache) == 0
    cache.store([3, 4, 5, 6], table[[3, 4, 5, 6]])  # slots are all free again after clear
    assert len(cache) == 4


def test_a_read_keeps_the_rows_no_later_discard_touched() -> None:
    table = np.arange(40, dtype=np.float32).reshape(20, 2)
    cache = HotRowCache(8, 2, np.dtype(np.float32))
    first = cache.generation
    cache.discard([7])
    second = cache.generation  # a read begun between two discards ...
    cache.discard([3, 9])
    cache.store_if_fresh(second, [5, 7, 9], table[[5, 7, 9]])  # ... is judged by the later only
    assert sorted(cache._slot_of) == [5, 7]
    cache.store_if_fresh(first, [6, 7, 8], table[[6, 7, 8]])  # one begun before both
    assert sorted(cache._slot_of) == [5, 6, 7, 8]  # 7 is cached already (by the later read)
    assert np.array_equal(cache.rows[cache.lookup([6, 8])], table[[6, 8]])


def test_a_read_older_than_the_discards_remembered_stores_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hot_rows, "RECENT_DISCARDS", 2)
    table = np.arange(40, dtype=np.float32).reshape(20, 2)
    cache = HotRowCache(8, 2, np.dtype(np.float32))
    old = cache.generation
    cache.discard([1])
    recent = cache.generation
    cache.discard([2])
    cache.discard([3])  # the discard of 1 is forgotten: a read begun before it may hold row 1
    cache.store_if_fresh(old, [4], table[[4]])
    assert len(cache) == 0
    cache.store_if_fresh(recent, [1, 2, 4], table[[1, 2, 4]])  # its discards are all known
    assert sorted(cache._slot_of) == [1, 4]
    monkeypatch.setattr(hot_rows, "RECENT_DISCARDED_IDS", 3)
    current = cache.generation
    cache.discard([10, 11, 12, 13])  # more ids than remembered: reads before it store nothing
    cache.store_if_fresh(current, [5], table[[5]])
    assert sorted(cache._slot_of) == [1, 4]
