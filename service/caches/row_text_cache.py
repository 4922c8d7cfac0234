"""A bounded cache of the JSON text of table rows that only pays when it earns.

Tables are read-only, so the text orjson writes for a row never changes: pasting cached
texts is cheaper than formatting 128 floats again. But on ids that do not recur (uniform
over a large table) a cache only costs, so which rows enter and when the cache steps aside
is its :class:`~service.caches.row_text_admission.AdmissionPolicy`. This module is the
cache itself:

* **An index, two ways in.** Which rows are cached is a per-row index (row id -> slot,
  int32) held as a Python array with a numpy view of the same memory, and the texts
  (each row's numbers without its brackets) are ``bytes`` in a numpy object array. A
  request of up to ``SCALAR`` ids is planned and admitted by plain Python loops over the
  arrays (~0.2 us an id; a dozen numpy calls would cost more than the loop); a larger one
  by a few vector operations over the views, not one hash probe per id.
* **Bulk misses, formatted once.** One orjson call formats all missed rows; its text is
  split into rows, which both fill the answer and are admitted (never formatted twice).
  The answer is then one ``bytes.join`` per level of nesting
  (:func:`~service.caches.row_texts.join_rows`). A request with fewer than 1 hit in
  ``_SPLICE_MIN_HITS`` positions is answered by plain bulk orjson.
* **Bounded memory.** Texts, per-entry overhead, index and doorkeeper stay under
  ``capacity_bytes``. Texts live in a ring of slots overwritten in CLOCK order
  (:class:`~service.caches.row_text_ring.TextRing`), sized at the first admission for the
  budget the index leaves. A table too large for the index to fit in a quarter of the
  budget is always answered in bulk.

The interface the use cases call is :meth:`RowTextCache.plan` then
:meth:`RowTextCache.render`; the output is byte-identical to
``orjson.dumps(float32 array, option=OPT_SERIALIZE_NUMPY)``. :meth:`RowTextCache.discard`
forgets given rows (for rows that change).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service.caches.row_text_admission import AdmissionPolicy
from service.caches.row_text_metrics import CacheEvents
from service.caches.row_text_plans import (
    EMPTY_IDS,
    SCALAR,
    RowTextPlan,
    bulk_plan,
    distinct,
    distinct_bulk_plan,
    learning_bulk_plan,
    render_bulk,
)
from service.caches.row_text_ring import ENTRY_OVERHEAD, TextRing
from service.caches.row_texts import NUMPY, inner_texts, join_rows, zero_text
from service.caches.shared_array import shared_array

if TYPE_CHECKING:
    from service.settings import ServiceSettings

# Per table row: the slot index (int32) and the doorkeeper byte.
_INDEX_BYTES_PER_ROW = 5
# A request is spliced from cached texts when at least 1 in this many positions hit.
_SPLICE_MIN_HITS = 8


class RowTextCache:
    """Maps row id -> JSON text of that (final, float32) row, within ``capacity_bytes``."""

    def __init__(
        self,
        capacity_bytes: int,
        table: str = "",
        *,
        min_hit_rate: float = 0.1,
        window_ids: int = 16384,
        sample_every: int = 64,
        doorkeeper: bool = True,
        repeats_cheap: bool = False,
    ) -> None:
        self.capacity_bytes = capacity_bytes
        # True where a repeated id costs only a row copy (numpy): bulk plans then gather ids
        # as they are; elsewhere each distinct row once (an ORT transfer, a queue slot).
        self.repeats_cheap = repeats_cheap
        self._bulk = bulk_plan if repeats_cheap else distinct_bulk_plan
        self.enabled = capacity_bytes > 0
        """False when the budget is 0: callers then encode with plain orjson."""
        # The index is a Python array (``_slot_py``: what per-id loops index, ~20 ns a read)
        # and a numpy view of the same memory (what vector code indexes).
        self._slot_py, self._slot_of = shared_array("i", 0, -1)  # row id -> slot, -1: none
        self._ring = TextRing()
        self._too_large = False
        # Bumped by ``discard``: a plan made before it never admits what it gathered.
        self.generation = 0
        self._events = CacheEvents(table)
        self._counts = self._events.counts
        self.policy = AdmissionPolicy(
            capacity_bytes,
            self._counts,
            self._index_covers,
            self.publish_metrics,
            min_hit_rate=min_hit_rate,
            window_ids=window_ids,
            sample_every=sample_every,
            doorkeeper=doorkeeper,
        )
        """Which missed rows are admitted, and when the cache steps aside."""

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, table: str, repeats_cheap: bool = False
    ) -> RowTextCache:
        """The cache of one table, sized and tuned by the service settings."""
        return cls(
            settings.row_cache_bytes,
            table,
            min_hit_rate=settings.row_cache_min_hit_rate,
            window_ids=settings.row_cache_window_ids,
            sample_every=settings.row_cache_sample_every,
            repeats_cheap=repeats_cheap,
        )

    # ------------------------------------------------------------------ state
    @property
    def size_bytes(self) -> int:
        """Accounted memory: texts with their overhead, the index and the doorkeeper."""
        return self._ring.text_bytes + self._slot_of.size * _INDEX_BYTES_PER_ROW

    @property
    def bypass(self) -> bool:
        """True while the cache steps aside (its hit rate too low): see :attr:`policy`."""
        return self.policy.bypass

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
        return {**self._counts, "entries": self._ring.entries, "bytes": self.size_bytes}

    def __len__(self) -> int:
        return self._ring.entries

    # ------------------------------------------------------------------- plan
    def plan(self, ids: np.ndarray) -> RowTextPlan:
        """Decide how to answer ``ids`` (int64 table ids, any shape; -1 = zero vector)."""
        plan = self._plan(ids)
        plan.generation = self.generation
        return plan

    def bulk_plan(self, ids: np.ndarray) -> RowTextPlan:
        """A plan that neither reads nor fills the cache (rows gathered at a fixed state)."""
        return self._bulk(ids)

    def _plan(self, ids: np.ndarray) -> RowTextPlan:
        if not self.enabled or ids.size == 0 or self._too_large:
            return self._bulk(ids)
        policy = self.policy
        if policy.bypass and policy.steps_aside(ids):
            return self._bulk(ids)
        flat = ids.reshape(-1)
        if flat.size <= SCALAR:
            return self._plan_small(ids, flat)
        if not self._index_covers(int(flat.max())):
            return self._bulk(ids)
        slots = self._slot_of[flat]
        zero = flat < 0
        zeros = int(np.count_nonzero(zero))
        if zeros:
            slots[zero] = -1  # ids -1 read the index's last row: not theirs
        hit = slots >= 0
        hits = int(np.count_nonzero(hit))
        self._count(hits, flat.size - hits - zeros)
        ring = self._ring
        if hits:
            ring.used[slots[hit]] = 1
        if hits == 0 or hits * _SPLICE_MIN_HITS < flat.size - zeros:
            return learning_bulk_plan(ids)
        items = ring.texts[slots].tolist()  # texts at hits, placeholders elsewhere
        if hits == flat.size:
            return RowTextPlan(EMPTY_IDS, ids.shape, items=items)
        miss_at = np.flatnonzero(~(hit | zero))
        fetch, miss_row = distinct(flat[miss_at])
        return RowTextPlan(
            fetch,
            ids.shape,
            items=items,
            miss_at=miss_at.tolist(),
            miss_row=None if miss_row is None else miss_row.tolist(),
            zero_at=np.flatnonzero(zero).tolist() if zeros else None,
        )

    def _plan_small(self, ids: np.ndarray, flat: np.ndarray) -> RowTextPlan:
        """:meth:`plan` for a few ids: plain Python beats a dozen numpy calls' fixed cost."""
        keys: list[int] = flat.tolist()
        if max(keys) >= self._slot_of.size and not self._index_covers(max(keys)):
            return self._bulk(ids)
        ring = self._ring
        slot_of, texts, used = self._slot_py, ring.texts, ring.used_py
        items: list[Any] = []
        miss_at: list[int] = []
        zero_at: list[int] = []
        for at, key in enumerate(keys):
            slot = slot_of[key] if key >= 0 else -2
            if slot >= 0:
                used[slot] = 1
                items.append(texts[slot])
            else:
                items.append(None)
                (miss_at if slot == -1 else zero_at).append(at)
        hits = len(keys) - len(miss_at) - len(zero_at)
        self._count(hits, len(miss_at))
        if hits == 0 or hits * _SPLICE_MIN_HITS < len(keys) - len(zero_at):
            return learning_bulk_plan(ids)
        if not miss_at and not zero_at:
            return RowTextPlan(EMPTY_IDS, ids.shape, items=items)
        fetch, miss_row = distinct(flat[miss_at])
        return RowTextPlan(
            fetch,
            ids.shape,
            items=items,
            miss_at=miss_at,
            miss_row=None if miss_row is None else miss_row.tolist(),
            zero_at=zero_at or None,
        )

    def _index_covers(self, max_id: int) -> bool:
        """Grow the per-row index (and the doorkeeper) to ``max_id``; False (for good) if it
        would not fit."""
        policy = self.policy
        if max_id >= policy.id_span:
            policy.id_span = max_id + 1
        if max_id < self._slot_of.size and self._slot_of.size:
            return True
        rows = max(max_id + 1, 2 * self._slot_of.size, 1024)
        if rows * _INDEX_BYTES_PER_ROW > self.capacity_bytes // 4:
            rows = max_id + 1
            if rows * _INDEX_BYTES_PER_ROW > self.capacity_bytes // 4:
                self._too_large = True
                return False
        slot_py, slot_of = shared_array("i", rows, -1)
        slot_of[: self._slot_of.size] = self._slot_of
        self._slot_py, self._slot_of = slot_py, slot_of
        policy.grow(rows)
        self._evict_over_budget()
        return True

    def _count(self, hits: int, misses: int) -> None:
        counts = self._counts
        counts["hits"] += hits
        counts["misses"] += misses
        self.policy.window(hits, hits + misses)

    # ----------------------------------------------------------------- render
    def render(
        self, plan: RowTextPlan, fetched: np.ndarray, shape: tuple[int, ...], flat: bool = False
    ) -> bytes:
        """JSON of the vectors nested to ``shape`` (``ids shape + (dim,)``), or one flat list.

        ``fetched``: the final float32 rows of ``plan.fetch_ids``, in that order.
        """
        if 0 in shape:
            return b"[]" if flat else orjson.dumps(np.zeros(shape, np.float32), option=NUMPY)
        # Rows gathered before a ``discard`` may be the replaced ones: never admitted.
        fresh = plan.generation == self.generation
        if plan.items is None:
            if plan.admit and fresh:
                self._admit(plan.fetch_ids, fetched)
            return render_bulk(plan, fetched, shape, flat)
        items = plan.items
        if plan.miss_at is not None:
            texts = inner_texts(fetched)
            if plan.miss_row is None:
                for at, text in zip(plan.miss_at, texts, strict=True):
                    items[at] = text
            else:
                for at, index in zip(plan.miss_at, plan.miss_row, strict=True):
                    items[at] = texts[index]
            if fresh:
                self._admit_texts(plan.fetch_ids, texts)
        if plan.zero_at is not None:
            zero = zero_text(shape[-1])
            for at in plan.zero_at:
                items[at] = zero
        # Nested to the caller's shape: the plan saw the ids flat (sequences pass [B*L] ids).
        return join_rows(items, shape[:-1], flat)

    # -------------------------------------------------------------- admission
    def _admit(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Cache the texts of fetched rows that recur (all new ones without a doorkeeper)."""
        at = self._admissible(ids)
        if at is not None:
            self._store(ids[at].tolist(), inner_texts(rows[at]))

    def _admit_texts(self, ids: np.ndarray, texts: list[bytes]) -> None:
        """:meth:`_admit` for rows whose texts are already written."""
        at = self._admissible(ids)
        if at is not None:
            self._store(ids[at].tolist(), [texts[i] for i in at])

    def _admissible(self, ids: np.ndarray) -> list[int] | np.ndarray | None:
        """Positions of ``ids`` to admit now (``None``: none), as the policy decides."""
        if ids.size == 0:
            return None
        policy = self.policy
        if ids.size <= SCALAR and policy.doorkeeper:  # in Python: a numpy call costs more
            keys = ids.tolist()
            if not self._index_covers(max(keys)):
                return None
            return policy.recurring_small(keys, self._slot_py) or None
        if not self._index_covers(int(ids.max())):
            return None
        positions = policy.recurring(ids, self._slot_of)
        return positions if positions.size else None

    # ------------------------------------------------------------------- ring
    def _store(self, keys: list[int], texts: list[bytes]) -> None:
        """Put texts in the ring's next slots (evicting what was there)."""
        ring = self._ring
        if ring.texts.size == 0:
            # Sized for the budget left after the index, from one row's text length.
            budget = self.capacity_bytes - self._slot_of.size * _INDEX_BYTES_PER_ROW
            slots = max(1, budget // (len(texts[0]) + ENTRY_OVERHEAD))
            ring.allocate(slots)
            self.policy.ring_sized(slots)
        evicted = ring.store(keys, texts, self._slot_py)
        self._counts["admissions"] += len(keys)
        self._counts["evictions"] += evicted
        self._evict_over_budget()

    def _evict_over_budget(self) -> None:
        """Free the oldest slots while longer-than-first texts or a grown index overflow."""
        budget = self.capacity_bytes - self._slot_of.size * _INDEX_BYTES_PER_ROW
        if self._ring.text_bytes > budget:
            self._counts["evictions"] += self._ring.shrink_to(budget, self._slot_py)

    def discard(self, ids: Iterable[int]) -> None:
        """Forget the cached texts of ``ids`` (rows that changed); other rows stay cached.

        Their doorkeeper marks stay too: a row that recurred still recurs, whatever its text.
        """
        self.generation += 1  # plans made before this admit nothing (their rows may be old)
        slot_of, ring = self._slot_py, self._ring
        span = len(slot_of)
        for key in ids:
            if 0 <= key < span and slot_of[key] >= 0:
                ring.free(slot_of[key], slot_of)

    def publish_metrics(self) -> None:
        """Move counts gathered since the last call into the Prometheus metrics (per window
        of ids and at scrape time, not per request)."""
        self._events.publish(self.size_bytes, self._ring.entries)
