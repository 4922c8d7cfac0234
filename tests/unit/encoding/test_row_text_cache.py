"""Cached-row JSON is byte-identical to orjson's own output; the cache stays bounded."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.encoding.responses import json_envelope, nest_texts, vectors_json
from service.encoding.row_text_cache import (
    WINDOW_REQUESTS,
    RowTextCache,
    _bulk_plan,
    inner_texts,
    join_rows,
    rows_text,
)

OPT = orjson.OPT_SERIALIZE_NUMPY


@pytest.mark.parametrize("shape", [(), (1,), (5,), (2, 3), (2, 2, 2), (0,), (3, 0)])
def test_joined_texts_equal_orjson(shape) -> None:
    table = (np.random.default_rng(0).standard_normal((50, 9)) * 10.0 ** np.arange(-4, 5)).astype(
        np.float32
    )
    table[0, :3] = [0.0, -0.0, 1e-38]
    ids = np.random.default_rng(1).integers(0, 50, size=shape)
    texts = dict(zip(range(50), rows_text(table), strict=True))
    flat = [texts[i] for i in ids.ravel().tolist()]
    vectors = table[ids]
    built = json_envelope("t", vectors.shape, "float32", nest_texts(flat, ids.shape))
    expected = orjson.dumps(
        {"table": "t", "shape": list(vectors.shape), "dtype": "float32", "vectors": vectors},
        option=OPT,
    )
    assert built == expected
    assert vectors_json(vectors) == orjson.dumps(vectors, option=OPT)


@pytest.mark.parametrize("shape", [(), (1,), (5,), (2, 3), (2, 2, 2), (3, 1, 2)])
@pytest.mark.parametrize("flat", [False, True])
def test_joined_inner_texts_equal_orjson(shape, flat) -> None:
    table = np.random.default_rng(2).standard_normal((20, 3)).astype(np.float32)
    ids = np.random.default_rng(3).integers(0, 20, size=shape)
    texts = inner_texts(table)
    joined = join_rows([texts[i] for i in ids.ravel().tolist()], ids.shape, flat)
    vectors = table[ids]
    assert joined == orjson.dumps(vectors.reshape(-1) if flat else vectors, option=OPT)


def test_cache_is_bounded_and_reports_misses() -> None:
    cache = RowTextCache(capacity_bytes=10_000, doorkeeper=False)  # admit on first sight
    texts, missing = cache.lookup([1, 2, 3])
    assert texts == [None, None, None] and missing == [0, 1, 2]
    cache.store([1, 2, 3], [b"[1.0]", b"[2.0]", b"[3.0]"])
    texts, missing = cache.lookup([3, 1])
    assert texts == [b"[3.0]", b"[1.0]"] and missing == []
    cache.store(list(range(100, 1000)), [b"[0.0]"] * 900)
    assert cache.size_bytes <= 10_000 and len(cache) < 903


# ----------------------------------------------------------------- plan / render
def _table(rows: int = 50, dim: int = 9) -> np.ndarray:
    scales = 10.0 ** np.linspace(-4, 4, dim)
    table = (np.random.default_rng(0).standard_normal((rows, dim)) * scales).astype(np.float32)
    table[0, :3] = [0.0, -0.0, 1e-38]
    return table


def _expected(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """table[ids] with zero vectors where ids == -1."""
    vectors = table[np.where(ids < 0, 0, ids)]
    vectors[ids < 0] = 0
    return vectors


def _answer(cache: RowTextCache, table: np.ndarray, ids: np.ndarray, flat: bool = False) -> bytes:
    plan = cache.plan(ids)
    assert plan.fetch_ids.dtype == np.int64 and plan.fetch_ids.ndim == 1
    if cache._bulk is not _bulk_plan or plan.admit or plan.items is not None:
        assert len(set(plan.fetch_ids.tolist())) == plan.fetch_ids.size  # each row once
    assert (plan.fetch_ids >= 0).all()
    return cache.render(plan, table[plan.fetch_ids], (*ids.shape, table.shape[1]), flat)


def _caches() -> list[RowTextCache]:
    """Off caches and bypassed ones (bulk plans of distinct ids, and of ids as they are where
    repeats are cheap), a normal one and one that admits on first sight."""
    bypassed = [
        RowTextCache(1 << 20, min_hit_rate=1.0, window_ids=1, repeats_cheap=cheap)
        for cheap in (False, True)
    ]
    for cache in bypassed:
        cache.bypass = True
    return [
        RowTextCache(0),
        RowTextCache(0, repeats_cheap=True),
        *bypassed,
        RowTextCache(1 << 20),
        RowTextCache(1 << 20, doorkeeper=False),
    ]


SHAPES = [(), (1,), (5,), (2, 3), (2, 2, 2), (0,), (3, 0), (70,), (3, 40)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("flat", [False, True])
def test_render_equals_orjson_for_every_shape_and_state(shape, flat) -> None:
    table = _table()
    rng = np.random.default_rng(2)
    for cache in _caches():
        for _ in range(4):  # cold, then warmer: misses, admissions, hits, splices
            ids = rng.integers(0, 12, size=shape)
            if ids.ndim:
                ids.reshape(-1)[:: 3 if ids.size > 2 else 5] = -1
            vectors = _expected(table, ids)
            want = orjson.dumps(vectors.reshape(-1) if flat else vectors, option=OPT)
            assert _answer(cache, table, ids, flat) == want


def test_zero_only_ids_and_empty_rows() -> None:
    table = _table()
    for cache in _caches():
        ids = np.full((2, 3), -1, dtype=np.int64)
        assert _answer(cache, table, ids) == orjson.dumps(_expected(table, ids), option=OPT)
    empty = np.zeros((4, 0), np.float32)
    cache = RowTextCache(1 << 20, doorkeeper=False)
    for _ in range(2):
        ids = np.array([1, 2, 1])
        assert _answer(cache, empty, ids) == orjson.dumps(empty[ids], option=OPT)


@pytest.mark.parametrize("doorkeeper", [True, False])
def test_random_ids_property(doorkeeper: bool) -> None:
    """Random requests, skewed then uniform: always orjson's bytes, cache bounded."""
    table = _table(rows=400, dim=16)
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
        vectors = _expected(table, ids)
        want = orjson.dumps(vectors.reshape(-1) if flat else vectors, option=OPT)
        assert _answer(cache, table, ids, flat) == want
        assert cache.size_bytes <= cache.capacity_bytes
        bypassed_seen |= cache.bypass
    stats = cache.stats()
    assert stats["hits"] > 0 and stats["admissions"] > 0 and bypassed_seen
    assert stats["evictions"] > 0 or doorkeeper


def test_second_hit_admission() -> None:
    table = _table()
    cache = RowTextCache(1 << 20)
    ids = np.array([3, 4])
    _answer(cache, table, ids)
    assert len(cache) == 0  # seen once: only the doorkeeper knows them
    _answer(cache, table, ids)
    assert len(cache) == 2
    plan = cache.plan(ids)
    assert plan.fetch_ids.size == 0  # all hits: nothing to gather
    assert cache.stats()["hits"] == 2 and cache.stats()["admissions"] == 2


def test_low_hit_rate_bypasses_then_samples_back() -> None:
    table = _table(rows=5000, dim=4)
    cache = RowTextCache(1 << 20, window_ids=100, min_hit_rate=0.5, sample_every=4)
    for start in range(0, 1000, 50):  # never a repeat
        _answer(cache, table, np.arange(start, start + 50))
    assert cache.bypass and cache.stats()["bypassed"] > 0
    hot = np.arange(10)
    for _ in range(200):  # the same rows again and again: sampled requests admit them
        _answer(cache, table, hot)
    assert not cache.bypass


def test_one_id_requests_decide_within_a_window_of_requests() -> None:
    """One-id requests never repeating: bypassed after WINDOW_REQUESTS requests, not after
    window_ids of them (16k requests paying for a cache that cannot hit)."""
    table = _table(rows=5000, dim=4)
    cache = RowTextCache(1 << 20, window_ids=16384)
    for row in range(WINDOW_REQUESTS):
        assert not cache.bypass
        _answer(cache, table, np.array([row]))
    assert cache.bypass


def test_metrics_published() -> None:
    from prometheus_client import REGISTRY

    table = _table()
    cache = RowTextCache(1 << 20, "metrics_t", doorkeeper=False)
    for _ in range(3):
        _answer(cache, table, np.array([1, 2]))
    cache.publish_metrics()
    sample = REGISTRY.get_sample_value
    labels = {"table": "metrics_t", "event": "hits"}
    assert sample("embedding_row_cache_events_total", labels) == 4
    assert sample("embedding_row_cache_entries", {"table": "metrics_t"}) == 2
    assert sample("embedding_row_cache_bytes", {"table": "metrics_t"}) == cache.size_bytes


def test_table_too_large_for_the_index_is_answered_in_bulk() -> None:
    table = _table(rows=5000, dim=4)
    cache = RowTextCache(8_000, doorkeeper=False)  # index of 5,000 rows needs 25 kB
    for _ in range(3):
        ids = np.array([4999, 3, 3])
        assert _answer(cache, table, ids) == orjson.dumps(table[ids], option=OPT)
    assert len(cache) == 0 and cache.size_bytes <= cache.capacity_bytes


def test_ring_evicts_oldest_and_stays_exact() -> None:
    table = _table(rows=300, dim=8)
    cache = RowTextCache(12_000, doorkeeper=False, min_hit_rate=0.0)
    rng = np.random.default_rng(5)
    for _ in range(200):
        ids = rng.integers(0, 300, size=int(rng.integers(1, 30)))
        assert _answer(cache, table, ids) == orjson.dumps(table[ids], option=OPT)
        assert cache.size_bytes <= cache.capacity_bytes
    stats = cache.stats()
    assert stats["evictions"] > 0 and stats["hits"] > 0
    assert stats["entries"] == int((cache._owner >= 0).sum()) == int((cache._slot_of >= 0).sum())


def test_rotating_bodies_end_a_cold_start_bypass() -> None:
    """A cold cache that went bulk still notices rows recurring (the old bench's 64 bodies)."""
    table = _table(rows=100_000, dim=4)
    rng = np.random.default_rng(6)
    bodies = [rng.integers(0, 100_000, size=256) for _ in range(64)]
    cache = RowTextCache(1 << 24, window_ids=4096, min_hit_rate=0.1, sample_every=64)
    for i in range(2000):
        ids = bodies[i % 64]
        assert _answer(cache, table, ids) == orjson.dumps(table[ids], option=OPT)
    assert not cache.bypass and cache.stats()["hits"] > 0


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


def test_ids_that_never_recur_keep_the_cache_bypassed() -> None:
    """Uniform 32-id requests over a large table: chance alone makes some ids meet their
    doorkeeper mark; that must not read as recurrence and end the bypass (it did, after
    ~6,000 requests, when the excess was clipped per request and chance was taken over the
    index, which grows to twice the ids seen)."""
    rows = 1_000_000
    cache = RowTextCache(256 << 20)
    rng = np.random.default_rng(11)
    fetched = np.zeros((32, 4), np.float32)
    bypassed = []
    for request in range(8000):
        plan = cache.plan(rng.integers(0, rows, 32))
        cache.render(plan, fetched[: plan.fetch_ids.size], (32, 4))
        if request % 500 == 499 and request > 1000:  # after the first window's decision
            bypassed.append(cache.bypass)
    assert all(bypassed), bypassed


def test_python_and_vector_paths_share_one_index() -> None:
    """Requests of a few ids go through per-id Python loops over the index, larger ones
    through numpy views of the same memory: rows one path admits, the other must hit, and
    the two views must never disagree."""
    table = _table(rows=2000, dim=8)
    cache = RowTextCache(1 << 20, min_hit_rate=0.0)
    small = np.arange(10, 40)  # <= _SCALAR ids: the Python path
    large = np.arange(1000, 1200)  # > _SCALAR ids: the vector path
    for ids in (small, small, large, large):
        assert _answer(cache, table, ids) == orjson.dumps(table[ids], option=OPT)
    assert cache.plan(np.concatenate([small, large])).fetch_ids.size == 0  # all cached
    assert cache.plan(large[:20]).fetch_ids.size == 0 and cache.plan(small).fetch_ids.size == 0
    assert np.array_equal(np.asarray(cache._slot_py), cache._slot_of)
    assert np.array_equal(np.asarray(cache._owner_py), cache._owner)
    rng = np.random.default_rng(12)
    for _ in range(300):
        size = int(rng.choice([1, 7, 33, 64, 65, 150]))
        ids = rng.integers(-1, 2000, size=size)
        assert _answer(cache, table, ids) == orjson.dumps(_expected(table, ids), option=OPT)
        assert cache.size_bytes <= cache.capacity_bytes
    stats = cache.stats()
    assert stats["entries"] == int((cache._owner >= 0).sum()) == int((cache._slot_of >= 0).sum())
