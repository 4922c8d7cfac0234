"""Helpers of the row-text cache tests: a table with awkward numbers, the answer orjson
gives, and the service's path (plan, gather the planned rows, render)."""

from __future__ import annotations

import numpy as np
import orjson

from service.caches.row_text_cache import RowTextCache
from service.caches.row_text_plans import bulk_plan

OPT = orjson.OPT_SERIALIZE_NUMPY


def table(rows: int = 50, dim: int = 9) -> np.ndarray:
    """float32 rows spanning eight orders of magnitude, with 0.0, -0.0 and a tiny number."""
    scales = 10.0 ** np.linspace(-4, 4, dim)
    rows_ = (np.random.default_rng(0).standard_normal((rows, dim)) * scales).astype(np.float32)
    rows_[0, :3] = [0.0, -0.0, 1e-38]
    return rows_


def expected(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """table[ids] with zero vectors where ids == -1."""
    vectors = table[np.where(ids < 0, 0, ids)]
    vectors[ids < 0] = 0
    return vectors


def answer(cache: RowTextCache, table: np.ndarray, ids: np.ndarray, flat: bool = False) -> bytes:
    """What the use cases do: plan, gather the planned rows, render (checking the plan)."""
    plan = cache.plan(ids)
    assert plan.fetch_ids.dtype == np.int64 and plan.fetch_ids.ndim == 1
    if cache._bulk is not bulk_plan or plan.admit or plan.items is not None:
        assert len(set(plan.fetch_ids.tolist())) == plan.fetch_ids.size  # each row once
    assert (plan.fetch_ids >= 0).all()
    return cache.render(plan, table[plan.fetch_ids], (*ids.shape, table.shape[1]), flat)


def caches() -> list[RowTextCache]:
    """Off caches and bypassed ones (bulk plans of distinct ids, and of ids as they are where
    repeats are cheap), a normal one and one that admits on first sight."""
    bypassed = [
        RowTextCache(1 << 20, min_hit_rate=1.0, window_ids=1, repeats_cheap=cheap)
        for cheap in (False, True)
    ]
    for cache in bypassed:
        cache.policy.bypass = True
    return [
        RowTextCache(0),
        RowTextCache(0, repeats_cheap=True),
        *bypassed,
        RowTextCache(1 << 20),
        RowTextCache(1 << 20, doorkeeper=False),
    ]


def index_agrees(cache: RowTextCache) -> bool:
    """The index (row id -> slot) and the ring (slot -> row id) describe the same entries."""
    owner = cache._ring.owner
    held = owner >= 0
    return len(cache) == int(held.sum()) == int((cache._slot_of >= 0).sum()) and bool(
        (cache._slot_of[owner[held]] == np.flatnonzero(held)).all()
    )
