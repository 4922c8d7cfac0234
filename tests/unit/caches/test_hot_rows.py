"""The hot-row cache: exact rows, bounded, and a CLOCK that keeps Zipf-hot rows."""

from __future__ import annotations

import numpy as np

from service.caches.hot_rows import HotRowCache


def _serve(cache: HotRowCache, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """What the Redis backend does: hits from the cache, misses from 'the store'."""
    slots = cache.lookup(ids.tolist())
    out = np.where((slots >= 0)[:, None], cache.rows[np.maximum(slots, 0)], table[ids])
    missing = np.unique(ids[slots < 0])
    cache.store(missing.tolist(), table[missing])
    return out


def test_rows_are_exact_and_the_cache_stays_bounded() -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((1000, 4)).astype(np.float32)
    cache = HotRowCache(50, 4, np.dtype(np.float32))
    for _ in range(200):
        ids = rng.integers(0, 1000, 40)
        assert np.array_equal(_serve(cache, table, ids), table[ids])
        assert len(cache) <= 50
    for row_id, slot in cache._slot_of.items():  # the index and the array agree
        assert np.array_equal(cache.rows[slot], table[row_id])


def test_more_misses_than_capacity_keeps_the_last_ones() -> None:
    table = np.arange(40, dtype=np.float32).reshape(20, 2)
    cache = HotRowCache(5, 2, np.dtype(np.float32))
    cache.store(list(range(20)), table)
    assert sorted(cache._slot_of) == [15, 16, 17, 18, 19]
    assert (cache.lookup([17]) >= 0).all()


def test_zero_capacity_caches_nothing() -> None:
    cache = HotRowCache(0, 3, np.dtype(np.float32))
    cache.store([1, 2], np.ones((2, 3), np.float32))
    assert len(cache) == 0 and (cache.lookup([1, 2]) == -1).all()


def test_zipf_hit_rate_with_a_tenth_of_the_rows_cached() -> None:
    """Zipf(1.1) ids, cache_rows = 10% of the rows: the target is a hit rate >= 80%."""
    rows = 100_000
    rng = np.random.default_rng(1)
    # Zipf over a finite table: ranks 1..rows with p ~ rank^-1.1, ids shuffled.
    weights = np.arange(1, rows + 1, dtype=np.float64) ** -1.1
    ids = rng.permutation(rows)[rng.choice(rows, 400_000, p=weights / weights.sum())]
    cache = HotRowCache(rows // 10, 1, np.dtype(np.float32))
    for batch in np.split(ids[:100_000], 100):  # warm up
        missing = np.unique(batch[cache.lookup(batch.tolist()) < 0])
        cache.store(missing.tolist(), np.zeros((missing.size, 1), np.float32))
    cache.hits = cache.misses = 0
    for batch in np.split(ids[100_000:], 300):
        missing = np.unique(batch[cache.lookup(batch.tolist()) < 0])
        cache.store(missing.tolist(), np.zeros((missing.size, 1), np.float32))
    assert cache.hits / (cache.hits + cache.misses) >= 0.80


def test_one_store_never_assigns_a_slot_twice() -> None:
    """Capacity 4, three slots referenced: storing [20, 21] must not evict 20 for 21.

    The sweep for 21 clears slots 1-3 and comes back to slot 0, which 20 took in this
    call; admission stops there (21 is read from Redis again next time).
    """
    table = np.arange(100 * 2, dtype=np.float32).reshape(100, 2)
    cache = HotRowCache(4, 2, np.dtype(np.float32))
    cache.store([0, 1, 2, 3], table[[0, 1, 2, 3]])
    cache.lookup([1, 2, 3])  # referenced; slot 0 (id 0) is not
    cache.store([20, 21], table[[20, 21]])
    assert sorted(cache._slot_of) == [1, 2, 3, 20]
    assert len(set(cache._slot_of.values())) == len(cache._slot_of)
    for row_id, slot in cache._slot_of.items():  # each stored id maps to its own row
        assert cache._id_in[slot] == row_id
        assert np.array_equal(cache.rows[slot], table[row_id])
    cache.store([21], table[[21]])  # a later call may evict 20 (unreferenced) as CLOCK does
    assert np.array_equal(cache.rows[cache._slot_of[21]], table[21])


def test_a_store_that_wraps_around_keeps_distinct_slots() -> None:
    rng = np.random.default_rng(5)
    table = rng.standard_normal((500, 3)).astype(np.float32)
    cache = HotRowCache(16, 3, np.dtype(np.float32))
    for _ in range(300):
        ids = np.unique(rng.integers(0, 500, 12))
        cache.lookup(rng.integers(0, 500, 20).tolist())
        missing = [i for i in ids.tolist() if i not in cache._slot_of]
        cache.store(missing, table[missing])
        slots = list(cache._slot_of.values())
        assert len(set(slots)) == len(slots)
        assert all(np.array_equal(cache.rows[s], table[i]) for i, s in cache._slot_of.items())
        assert all(cache._id_in[s] == i for i, s in cache._slot_of.items())


def test_discard_forgets_only_the_given_rows_and_frees_their_slots() -> None:
    """Per-id invalidation (rows that changed): the given ids miss next time, the others
    still hit, and the freed slots are reused (the hand passes rows 0 and 2: just hit)."""
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    cache = HotRowCache(4, 2, np.dtype(np.float32))
    cache.store([0, 1, 2, 3], table[[0, 1, 2, 3]])
    cache.discard([1, 3, 7])  # 7 was never cached: ignored
    assert len(cache) == 2
    assert cache.lookup([0, 1, 2, 3]).tolist()[1::2] == [-1, -1]
    cache.store([5, 6], table[[5, 6]])  # into the freed slots: 0 and 2 stay
    assert sorted(cache._slot_of) == [0, 2, 5, 6]
    for row_id, slot in cache._slot_of.items():
        assert np.array_equal(cache.rows[slot], table[row_id])
