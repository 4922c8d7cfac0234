"""How one request's rows are answered: :class:`RowTextPlan`, and the bulk plans that answer
it without cached texts (one gathered block, one orjson call).

The row-text cache makes a plan from its index (:mod:`service.caches.row_text_cache`); the
bulk plans here are what it falls back to, and what a disabled or bypassed cache returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.caches.row_texts import NUMPY

EMPTY_IDS = np.empty(0, dtype=np.int64)
SCALAR = 64
"""Up to this many ids, a request is planned and admitted in plain Python (per-id loops over
Python arrays beat a dozen numpy calls' fixed cost)."""
# Up to this many ids, de-duplicating in Python beats np.unique's fixed cost.
_SMALL = 256


@dataclass(slots=True)
class RowTextPlan:
    """What :meth:`RowTextCache.plan` decided for one request.

    ``fetch_ids``: table ids whose final float32 rows the caller gathers, in this order
    (distinct, except in a bulk plan of a cache whose repeats are cheap). Bulk (``items is
    None``): every position reads ``fetched[inverse]`` (``inverse`` None when positions and
    fetched rows agree), zero rows where ``zero``. Spliced: ``items`` holds cached row
    texts, and positions ``miss_at`` read ``fetched[miss_row]``.
    """

    fetch_ids: np.ndarray
    ids_shape: tuple[int, ...]
    inverse: np.ndarray | None = None
    zero: np.ndarray | None = None
    admit: bool = False
    items: list[Any] | None = None
    miss_at: list[int] | None = None
    miss_row: list[int] | None = None
    zero_at: list[int] | None = None
    generation: int = 0  # the cache's generation when planned (``RowTextCache.discard``)


def distinct(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Distinct ids and, unless they already are distinct, where each id is among them."""
    if ids.size > _SMALL:
        unique, inverse = np.unique(ids, return_inverse=True)
        return (ids, None) if unique.size == ids.size else (unique, inverse)
    # np.unique's fixed cost dwarfs a few dict operations on small requests.
    keys = ids.tolist()
    first = dict.fromkeys(keys)
    if len(first) == len(keys):
        return ids, None
    index = {key: i for i, key in enumerate(first)}
    return np.fromiter(first, np.int64, len(first)), np.array([index[k] for k in keys], np.intp)


def learning_bulk_plan(ids: np.ndarray) -> RowTextPlan:
    """Too few hits to beat one orjson call over the block: bulk, but admit recurring rows
    (admission needs each row once)."""
    plan = distinct_bulk_plan(ids)
    plan.admit = True
    return plan


def distinct_bulk_plan(ids: np.ndarray) -> RowTextPlan:
    """Every position from one gathered block of distinct ids, and where each position reads."""
    flat = ids.reshape(-1)
    if flat.size == 1 and flat[0] >= 0:
        return RowTextPlan(flat, ids.shape)
    zero = flat < 0
    if zero.any():
        unique, inverse = distinct(np.where(zero, 0, flat))
        if inverse is None:
            inverse = np.arange(flat.size)
        return RowTextPlan(unique, ids.shape, inverse=inverse, zero=zero)
    unique, inverse = distinct(flat)
    return RowTextPlan(unique, ids.shape, inverse=inverse)


def bulk_plan(ids: np.ndarray) -> RowTextPlan:
    """Every position from one gathered block, in request order: a repeated id is gathered
    again (cheaper than finding repeats: np.unique cost ~75 us on 1,024 ids, while a repeat
    costs one row's copy), ids -1 read row 0 and are zeroed."""
    flat = ids.reshape(-1)
    if flat.size == 1 and flat[0] >= 0:
        return RowTextPlan(flat, ids.shape)
    # The common case, checked in Python: no numpy call's cost.
    if 0 < flat.size <= SCALAR and min(flat.tolist()) >= 0:
        return RowTextPlan(flat, ids.shape)
    zero = flat < 0
    if zero.any():
        return RowTextPlan(np.where(zero, 0, flat), ids.shape, zero=zero)
    return RowTextPlan(flat, ids.shape)


def render_bulk(
    plan: RowTextPlan, fetched: np.ndarray, shape: tuple[int, ...], flat: bool
) -> bytes:
    """The JSON of a bulk plan's answer: one orjson call over the gathered block."""
    block = fetched if plan.inverse is None else fetched.take(plan.inverse, axis=0)
    if plan.zero is not None:
        if plan.inverse is None:  # the caller's rows (maybe the mapped table): never written
            block = block.copy()
        block[plan.zero] = 0
    return orjson.dumps(block.reshape(-1 if flat else shape), option=NUMPY)
