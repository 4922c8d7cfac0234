"""Cached-row JSON is byte-identical to orjson's own output; the cache stays bounded."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import orjson
import pytest

from service.caches.row_text_cache import RowTextCache
from tests.unit.caches.row_text_answers import OPT, answer, caches, expected, index_agrees
from tests.unit.caches.row_text_answers import table as table_

SHAPES = [(), (1,), (5,), (2, 3), (2, 2, 2), (0,), (3, 0), (70,), (3, 40)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("flat", [False, True])
def test_render_equals_orjson_for_every_shape_and_state(shape, flat) -> None:
    table = table_()
    rng = np.random.default_rng(2)
    for cache in caches():
        for _ in range(4):  # cold, then warmer: misses, admissions, hits, splices
            ids = rng.integers(0, 12, size=shape)
            if ids.ndim:
                ids.reshape(-1)[:: 3 if ids.size > 2 else 5] = -1
            vectors = expected(table, ids)
            want = orjson.dumps(vectors.reshape(-1) if flat else vectors, option=OPT)
            assert answer(cache, table, ids, flat) == want


def test_zero_only_ids_and_empty_rows() -> None:
    table = table_()
    for cache in caches():
        ids = np.full((2, 3), -1, dtype=np.int64)
        assert answer(cache, table, ids) == orjson.dumps(expected(table, ids), option=OPT)
    empty = np.zeros((4, 0), np.float32)
    cache = RowTextCache(1 << 20, doorkeeper=False)
    for _ in range(2):
        ids = np.array([1, 2, 1])
        assert answer(cache, empty, ids) == orjson.dumps(empty[ids], option=OPT)


@pytest.mark.parametrize("doorkeeper", [True, False])
def test_random_ids_property(doorkeeper: bool) -> None:
    """Random requests, skewed then uniform: always orjson's bytes, cache bounded."""
    table = table_(rows=400, dim=16)
    rng = np.random.default_rng(3)
    cache = RowTextCache(
        20_000, window_ids=64, min_hit_rate=0.3, sample_every=3, doorkeeper=doorkeeper
    )
    bypassed_seen = False
    for step in range(300):
        size = int(rng.integers(0, 3)) * int(rng.integers(1, 40))
        skewed = np.minimum(rng.zipf(1.2, size=size) - 1, 399)
        ids = skewed if step % 100 < 50 else rng.integers(0, 400, size=size)
        ids[rng.random(size) < 0.05] = -1
        ids = ids.reshape((size,) if step % 2 else (1, size))
        flat = bool(step % 3 == 0)
        vectors = expected(table, ids)
        want = orjson.dumps(vectors.reshape(-1) if flat else vectors, option=OPT)
        assert answer(cache, table, ids, flat) == want
        assert cache.size_bytes <= cache.capacity_bytes
        bypassed_seen |= cache.bypass
    stats = cache.stats()
    assert stats["hits"] > 0 and stats["admissions"] > 0 and bypassed_seen
    assert stats["evictions"] > 0 or doorkeeper


def test_metrics_published() -> None:
    from prometheus_client import REGISTRY

    table = table_()
    cache = RowTextCache(1 << 20, "metrics_t", doorkeeper=False)
    for _ in range(3):
        answer(cache, table, np.array([1, 2]))
    cache.publish_metrics()
    sample = REGISTRY.get_sample_value
    labels = {"table": "metrics_t", "event": "hits"}
    assert sample("embedding_row_cache_events_total", labels) == 4
    assert sample("embedding_row_cache_entries", {"table": "metrics_t"}) == 2
    assert sample("embedding_row_cache_bytes", {"table": "metrics_t"}) == cache.size_bytes


def test_table_too_large_for_the_index_is_answered_in_bulk() -> None:
    table = table_(rows=5000, dim=4)
    cache = RowTextCache(8_000, doorkeeper=False)  # index of 5,000 rows needs 25 kB
    for _ in range(3):
        ids = np.array([4999, 3, 3])
        assert answer(cache, table, ids) == orjson.dumps(table[ids], option=OPT)
    assert len(cache) == 0 and cache.size_bytes <= cache.capacity_bytes


@pytest.mark.parametrize("discard_every", [0, 7])
def test_ring_evicts_oldest_and_stays_exact(discard_every: int) -> None:
    """Within the budget and byte-exact, also while rows are discarded (slots freed out of
    CLOCK order, then refilled)."""
    table = table_(rows=300, dim=8)
    cache = RowTextCache(12_000, doorkeeper=False, min_hit_rate=0.0)
    rng = np.random.default_rng(5)
    for step in range(200):
        ids = rng.integers(0, 300, size=int(rng.integers(1, 30)))
        assert answer(cache, table, ids) == orjson.dumps(table[ids], option=OPT)
        if discard_every and step % discard_every == 0:
            cache.discard(rng.integers(0, 300, size=20).tolist())
        assert cache.size_bytes <= cache.capacity_bytes and index_agrees(cache)
    stats = cache.stats()
    assert stats["evictions"] > 0 and stats["hits"] > 0
    assert stats["entries"] == len(cache)


def test_flat_planned_ids_render_to_the_callers_nested_shape() -> None:
    """Sequences plan ``[B*L]`` ids (-1 at padding) and render ``(B, L, dim)``: every cache
    state (cold, warming, hot) must nest to the shape asked for, never to the plan's."""
    rng = np.random.default_rng(7)
    table = rng.standard_normal((1000, 16)).astype(np.float32)
    for trial in range(40):
        cache = RowTextCache(1 << 20, "t")
        for _ in range(40):
            batch, length = (int(v) for v in rng.integers(1, 5, 2))
            ids = rng.integers(-1, 30 if trial % 2 else 1000, batch * length).astype(np.int64)
            plan = cache.plan(ids)
            shape = (batch, length, 16)
            expected = np.zeros((ids.size, 16), np.float32)
            expected[ids >= 0] = table[ids[ids >= 0]]
            want = orjson.dumps(expected.reshape(shape), option=orjson.OPT_SERIALIZE_NUMPY)
            assert cache.render(plan, table[plan.fetch_ids], shape) == want


def test_python_and_vector_paths_share_one_index() -> None:
    """Requests of a few ids go through per-id Python loops over the index, larger ones
    through numpy views of the same memory: rows one path admits, the other must hit, and
    the two views must never disagree."""
    table = table_(rows=2000, dim=8)
    cache = RowTextCache(1 << 20, min_hit_rate=0.0)
    small = np.arange(10, 40)  # <= SCALAR ids: the Python path
    large = np.arange(1000, 1200)  # > SCALAR ids: the vector path
    for ids in (small, small, large, large):
        assert answer(cache, table, ids) == orjson.dumps(table[ids], option=OPT)
    assert cache.plan(np.concatenate([small, large])).fetch_ids.size == 0  # all cached
    assert cache.plan(large[:20]).fetch_ids.size == 0 and cache.plan(small).fetch_ids.size == 0
    assert np.array_equal(np.asarray(cache._slot_py), cache._slot_of)
    assert np.array_equal(np.asarray(cache._ring.owner_py), cache._ring.owner)
    rng = np.random.default_rng(12)
    for _ in range(300):
        size = int(rng.choice([1, 7, 33, 64, 65, 150]))
        ids = rng.integers(-1, 2000, size=size)
        assert answer(cache, table, ids) == orjson.dumps(expected(table, ids), option=OPT)
        assert cache.size_bytes <= cache.capacity_bytes
    stats = cache.stats()
    assert stats["entries"] == len(cache) and index_agrees(cache)


def test_cache_is_bounded_and_reports_misses() -> None:
    table = table_(rows=1000, dim=3)
    cache = RowTextCache(capacity_bytes=40_000, doorkeeper=False)  # admit on first sight
    ids = np.array([1, 2, 3])
    assert answer(cache, table, ids) == orjson.dumps(table[ids], option=OPT)
    assert cache.stats()["misses"] == 3 and len(cache) == 3
    plan = cache.plan(np.array([3, 1]))
    assert plan.fetch_ids.size == 0 and cache.stats()["hits"] == 2  # both from cached text
    assert answer(cache, table, np.arange(100, 1000)) == orjson.dumps(table[100:], option=OPT)
    assert cache.size_bytes <= 40_000 and len(cache) < 900 and index_agrees(cache)
    assert cache.stats()["evictions"] > 0


@pytest.mark.parametrize("size", [3, 200])  # per-id loops and vector code
def test_discard_forgets_only_the_given_rows(size: int) -> None:
    """Per-id invalidation (rows that changed): the discarded ids miss and are formatted
    from the rows gathered now; every other row still hits; the accounting follows."""
    table = table_(rows=1000, dim=4)
    cache = RowTextCache(1 << 20, doorkeeper=False, min_hit_rate=0.0)
    ids = np.arange(size) * 3
    answer(cache, table, ids)
    held, size_before = len(cache), cache.size_bytes
    gone = ids[::2]
    cache.discard([*gone.tolist(), -1, 999_999])  # ids never cached are ignored
    assert len(cache) == held - gone.size and cache.size_bytes < size_before
    assert index_agrees(cache)
    plan = cache.plan(ids)
    assert sorted(plan.fetch_ids.tolist()) == sorted(gone.tolist())
    changed = table.copy()
    changed[gone] += 1.0
    assert cache.render(plan, changed[plan.fetch_ids], (size, 4)) == orjson.dumps(
        changed[ids], option=OPT
    )


def test_a_dropped_cache_is_freed_at_once() -> None:
    """No reference cycle (the policy calls back through weak references): a replaced
    table's cache, up to its whole budget of texts, is freed when its last reference goes,
    not at some later cyclic collection."""
    table = table_()
    cache = RowTextCache(1 << 20, doorkeeper=False)
    answer(cache, table, np.arange(10))
    gone = weakref.ref(cache)
    gc.disable()
    try:
        del cache
        assert gone() is None
    finally:
        gc.enable()
