"""The race of an update with a request in flight: rows gathered before a ``discard`` (so maybe
the replaced ones) are never admitted into a cache after it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

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
    assert len(cache) == 0
    cache.store_if_fresh(cache.generation, [1, 2], table[[1, 2]])
    assert len(cache) == 2
    generation = cache.generation
    cache.clear()  # an update whose rows are unknown: every row goes
    assert len(cache) == 0 and cache.lookup([1, 2]).tolist() == [-1, -1]
    cache.store_if_fresh(generation, [3], table[[3]])
    assert len(cache) == 0
    cache.store([3, 4, 5, 6], table[[3, 4, 5, 6]])  # slots are all free again after clear
    assert len(cache) == 4
