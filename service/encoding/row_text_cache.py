"""A bounded cache of the JSON text of table rows that only pays when it earns.

Tables are read-only, so the text orjson writes for a row never changes: joining cached
texts is cheaper than formatting 128 floats again. But on ids that do not recur (uniform
over a large table) a cache only costs: lookups, splitting, churn. So:

* **Bulk misses.** Rows the cache lacks are formatted with one orjson call over the
  gathered block; its text is split at ``"],["`` (numbers hold no brackets) and spliced
  between cached texts. Texts are stored without their brackets (``1.0,2.0``) so that a
  1-D request is a single ``b"],[".join``.
* **Second-hit admission.** A row enters the cache the second time it is missed within
  the doorkeeper's reach (a bounded set of ids seen once, cleared when full, as TinyLFU
  resets its sketch). One-off rows never displace recurring ones.
* **Sampled bypass.** Hits are counted per window of looked-up ids; below
  ``min_hit_rate`` the cache steps aside and requests are answered by bulk orjson over
  ``np.take`` (no per-row work at all), except one request in ``sample_every`` that still
  goes through the cache, so a shift to skewed traffic is noticed and the cache refills.
* **Bounded memory.** Texts, their per-entry overhead and the doorkeeper together stay
  under ``capacity_bytes``; eviction is FIFO by insertion, an eighth at a time.

The interface the use cases call is :meth:`RowTextCache.plan` then
:meth:`RowTextCache.render`; the output is byte-identical to
``orjson.dumps(float32 array, option=OPT_SERIALIZE_NUMPY)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service import metrics

if TYPE_CHECKING:
    from service.settings import ServiceSettings

# Per entry beyond the text: dict slot, int key, bytes object header.
_ENTRY_OVERHEAD = 120
# Per doorkeeper id: set slot (with load factor) and the int object.
_DOORKEEPER_ENTRY = 80
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# Below this many ids, de-duplicating in Python beats np.unique's fixed cost.
_SMALL = 64
_EMPTY_IDS = np.empty(0, dtype=np.int64)


def rows_text(rows: np.ndarray) -> list[bytes]:
    """orjson's text of each row of a 2-D float array, as orjson writes it inside a list."""
    return [b"[" + part + b"]" for part in _inner_texts(rows)]


def _inner_texts(rows: np.ndarray) -> list[bytes]:
    """Each row's text without its brackets (``b"1.0,2.0"``), from one orjson call."""
    if rows.shape[0] == 0:
        return []
    # Numbers never contain brackets, so "],[" separates rows exactly.
    return orjson.dumps(rows, option=_NUMPY)[2:-2].split(b"],[")


@dataclass(slots=True)
class RowTextPlan:
    """What :meth:`RowTextCache.plan` decided for one request.

    ``fetch_ids``: distinct table ids whose final float32 rows the caller gathers, in this
    order. Either every position is answered in bulk (``texts is None``: ``inverse`` maps
    positions to fetched rows, ``None`` when they are the same) or positions are spliced
    from cached texts (``texts``) and fetched misses.
    """

    fetch_ids: np.ndarray
    ids_shape: tuple[int, ...]
    texts: list[bytes | None] | None = None
    keys: list[int] | None = None
    missing: list[int] | None = None
    inverse: np.ndarray | None = None
    zero: np.ndarray | None = None


class RowTextCache:
    """Maps row id -> JSON text of that (final, float32) row, within ``capacity_bytes``."""

    def __init__(
        self,
        capacity_bytes: int,
        table: str = "",
        *,
        min_hit_rate: float = 0.2,
        window_ids: int = 16384,
        sample_every: int = 16,
        doorkeeper: bool = True,
    ) -> None:
        self.capacity_bytes = capacity_bytes
        self.min_hit_rate = min_hit_rate
        self.window_ids = window_ids
        self.sample_every = max(1, sample_every)
        self._texts: dict[int, bytes] = {}
        self._text_bytes = 0
        # A sixteenth of the budget remembers ids seen once (second-hit admission).
        self._door_cap = capacity_bytes // 16 // _DOORKEEPER_ENTRY if doorkeeper else 0
        self._door: set[int] = set()
        self._text_budget = capacity_bytes - self._door_cap * _DOORKEEPER_ENTRY
        self._zero_inner: dict[int, bytes] = {}
        self.bypass = False
        self._skipped = 0
        self._window_seen = 0
        self._window_hits = 0
        self._counts = {"hits": 0, "misses": 0, "admissions": 0, "evictions": 0, "bypassed": 0}
        self._published = dict.fromkeys(self._counts, 0)
        self._table = table
        self._children: dict[str, Any] | None = None

    @classmethod
    def from_settings(cls, settings: ServiceSettings, table: str) -> RowTextCache:
        """The cache of one table, sized and tuned by the service settings."""
        return cls(
            settings.row_cache_bytes,
            table,
            min_hit_rate=settings.row_cache_min_hit_rate,
            window_ids=settings.row_cache_window_ids,
            sample_every=settings.row_cache_sample_every,
        )

    # ------------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        """False when the budget is 0: callers then encode with plain orjson."""
        return self.capacity_bytes > 0

    @property
    def size_bytes(self) -> int:
        """Accounted memory: texts, per-entry overhead and the doorkeeper."""
        return self._text_bytes + len(self._door) * _DOORKEEPER_ENTRY

    @property
    def hits(self) -> int:
        """Positions answered from cached text, since start."""
        self.publish_metrics()
        return self._counts["hits"]

    @property
    def misses(self) -> int:
        """Positions whose row was formatted (while the cache was consulted), since start."""
        return self._counts["misses"]

    def stats(self) -> dict[str, int]:
        """Counters since start plus entries and bytes (and publishes them as metrics)."""
        self.publish_metrics()
        return {**self._counts, "entries": len(self._texts), "bytes": self.size_bytes}

    def __len__(self) -> int:
        return len(self._texts)

    # ------------------------------------------------------------------- plan
    def plan(self, ids: np.ndarray) -> RowTextPlan:
        """Decide how to answer ``ids`` (int64 table ids, any shape; -1 = zero vector)."""
        if not self.enabled or ids.size == 0:
            return _bulk_plan(ids)
        if self.bypass:
            self._skipped += 1
            if self._skipped < self.sample_every:
                self._counts["bypassed"] += 1
                return _bulk_plan(ids)
            self._skipped = 0
        keys: list[int] = ids.reshape(-1).tolist()
        texts = list(map(self._texts.get, keys))
        if None not in texts:
            self._count(len(keys), 0)
            return RowTextPlan(_EMPTY_IDS, ids.shape, texts)
        missing = [i for i, text in enumerate(texts) if text is None]
        wanted = dict.fromkeys(keys[i] for i in missing)
        zeros = 0
        if -1 in wanted:  # zero-vector positions: neither hits nor misses
            del wanted[-1]
            zeros = keys.count(-1)
        self._count(len(keys) - len(missing), len(missing) - zeros)
        fetch = np.fromiter(wanted, dtype=np.int64, count=len(wanted))
        return RowTextPlan(fetch, ids.shape, texts, keys, missing)

    def _count(self, hits: int, misses: int) -> None:
        counts = self._counts
        counts["hits"] += hits
        counts["misses"] += misses
        self._window_hits += hits
        self._window_seen += hits + misses
        if self._window_seen >= self.window_ids:
            rate = self._window_hits / self._window_seen
            self.bypass = rate < self.min_hit_rate
            self._window_seen = self._window_hits = 0
            self.publish_metrics()

    # ----------------------------------------------------------------- render
    def render(
        self, plan: RowTextPlan, fetched: np.ndarray, shape: tuple[int, ...], flat: bool = False
    ) -> bytes:
        """JSON of the vectors nested to ``shape`` (``ids shape + (dim,)``), or one flat list.

        ``fetched``: the final float32 rows of ``plan.fetch_ids``, in that order.
        """
        if 0 in shape:
            return b"[]" if flat else orjson.dumps(np.zeros(shape, np.float32), option=_NUMPY)
        if plan.texts is None:
            return _render_bulk(plan, fetched, shape, flat)
        texts = plan.texts
        if plan.missing:
            self._fill(plan, fetched, shape[-1])
        if flat:
            return b"[" + b",".join(texts) + b"]"  # type: ignore[arg-type]
        return _nest(texts, plan.ids_shape)  # type: ignore[arg-type]

    def _fill(self, plan: RowTextPlan, fetched: np.ndarray, dim: int) -> None:
        """Put fetched rows' texts (and zero rows) in the missing positions; admit recurring rows."""
        assert plan.texts is not None and plan.keys is not None and plan.missing is not None
        fetch_keys: list[int] = plan.fetch_ids.tolist()
        found = dict(zip(fetch_keys, _inner_texts(fetched), strict=True))
        found[-1] = self._zero_text(dim)
        texts, keys = plan.texts, plan.keys
        for i in plan.missing:
            texts[i] = found[keys[i]]
        if fetch_keys:
            self._admit(fetch_keys, found)

    def _zero_text(self, dim: int) -> bytes:
        text = self._zero_inner.get(dim)
        if text is None:
            text = self._zero_inner[dim] = orjson.dumps(np.zeros(dim, np.float32), option=_NUMPY)[
                1:-1
            ]
        return text

    def _admit(self, fetch_keys: list[int], found: dict[int, bytes]) -> None:
        """Store rows missed before (in the doorkeeper); remember the others as seen once."""
        if not self._door_cap:
            self._store_inner(fetch_keys, found)
            return
        door = self._door
        seen = door.intersection(fetch_keys)
        if seen:
            door.difference_update(seen)
            self._store_inner(seen, found)
        if len(seen) < len(fetch_keys):
            door.update(fetch_keys if not seen else (k for k in fetch_keys if k not in seen))
            if len(door) > self._door_cap:
                door.clear()  # TinyLFU-style reset: old one-off sightings age out at once

    def _store_inner(self, keys: list[int] | set[int], found: dict[int, bytes]) -> None:
        cache = self._texts
        added = 0
        for key in keys:
            if key not in cache:
                text = cache[key] = found[key]
                added += len(text) + _ENTRY_OVERHEAD
        self._counts["admissions"] += len(keys)
        self._text_bytes += added
        while self._text_bytes > self._text_budget and cache:
            self._evict(max(1, len(cache) // 8))

    def _evict(self, count: int) -> None:
        cache = self._texts
        for key in list(islice(cache, count)):
            self._text_bytes -= len(cache.pop(key)) + _ENTRY_OVERHEAD
        self._counts["evictions"] += count

    # ---------------------------------------------------------------- metrics
    def publish_metrics(self) -> None:
        """Move counts gathered since the last call into the Prometheus metrics.

        Called per window of ids and at scrape time, not per request: a counter increment
        costs about as much as a W1 request's cache lookup.
        """
        children = self._children
        if children is None:
            children = self._children = {
                **{e: metrics.ROW_CACHE_EVENTS.labels(self._table, e) for e in self._counts},
                "bytes": metrics.ROW_CACHE_BYTES.labels(self._table),
                "entries": metrics.ROW_CACHE_ENTRIES.labels(self._table),
            }
        for event, value in self._counts.items():
            delta = value - self._published[event]
            if delta:
                children[event].inc(delta)
                self._published[event] = value
        children["bytes"].set(self.size_bytes)
        children["entries"].set(len(self._texts))

    # ---------------------------------------------------------------- legacy
    def lookup(self, ids: list[int]) -> tuple[list[bytes | None], list[int]]:
        """Bracketed texts for ``ids`` (``None`` where missing) and the positions that missed.

        Kept for the pre-``plan`` handlers; new code calls :meth:`plan` / :meth:`render`.
        """
        texts = [None if t is None else b"[" + t + b"]" for t in map(self._texts.get, ids)]
        missing = [i for i, text in enumerate(texts) if text is None]
        self._count(len(ids) - len(missing), len(missing))
        return texts, missing

    def store(self, ids: list[int], texts: list[bytes]) -> None:
        """Remember bracketed texts of rows just encoded (admitted on their second miss)."""
        found = {key: text[1:-1] for key, text in zip(ids, texts, strict=True)}
        self._admit(list(found), found)


def _bulk_plan(ids: np.ndarray) -> RowTextPlan:
    """Every position from one gathered block: distinct ids, and where each position reads."""
    flat = ids.reshape(-1)
    if flat.size <= _SMALL:
        keys = flat.tolist()
        if len(set(keys)) == len(keys) and -1 not in keys:
            return RowTextPlan(flat, ids.shape)
    zero = flat < 0
    if zero.any():
        unique, inverse = np.unique(np.where(zero, 0, flat), return_inverse=True)
        return RowTextPlan(unique, ids.shape, inverse=inverse, zero=zero)
    unique, inverse = np.unique(flat, return_inverse=True)
    if unique.size == flat.size:
        return RowTextPlan(flat, ids.shape)
    return RowTextPlan(unique, ids.shape, inverse=inverse)


def _render_bulk(
    plan: RowTextPlan, fetched: np.ndarray, shape: tuple[int, ...], flat: bool
) -> bytes:
    block = fetched if plan.inverse is None else np.take(fetched, plan.inverse, axis=0)
    if plan.zero is not None:
        block[plan.zero] = 0  # a fresh array from np.take: ours to write
    return orjson.dumps(block.reshape(-1 if flat else shape), option=_NUMPY)


def _nest(texts: list[bytes], ids_shape: tuple[int, ...]) -> bytes:
    """Inner row texts nested to ``ids_shape + (dim,)`` exactly as orjson writes it."""
    if not ids_shape:
        return b"[" + texts[0] + b"]"
    if len(ids_shape) == 1:
        return b"[[" + b"],[".join(texts) + b"]]"
    size = ids_shape[-1]
    level = [b"[[" + b"],[".join(texts[i : i + size]) + b"]]" for i in range(0, len(texts), size)]
    for size in reversed(ids_shape[1:-1]):
        level = [b"[" + b",".join(level[i : i + size]) + b"]" for i in range(0, len(level), size)]
    return b"[" + b",".join(level) + b"]"
