"""A bounded cache of the JSON text of table rows that only pays when it earns.

Tables are read-only, so the text orjson writes for a row never changes: pasting cached
texts is cheaper than formatting 128 floats again. But on ids that do not recur (uniform
over a large table) a cache only costs. So:

* **An index, two ways in.** Which rows are cached is a per-row index (row id -> slot,
  int32) held as a Python array with a numpy view of the same memory, and the texts
  (each row's numbers without its brackets) are ``bytes`` in a numpy object array. A
  request of up to ``_SCALAR`` ids is planned and admitted by plain Python loops over the
  arrays (~0.2 us an id; a dozen numpy calls would cost more than the loop); a larger one
  by a few vector operations over the views, not one hash probe per id.
* **Bulk misses, formatted once.** One orjson call formats all missed rows; its text is
  split into rows, which both fill the answer and are admitted (never formatted twice).
  The answer is then one ``bytes.join`` per level of nesting: ``[[`` + ``],[``-joined
  rows + ``]]`` for 1-D ids, ``,``-joined for a flat (V2) list. A request with fewer than
  1 hit in ``_SPLICE_MIN_HITS`` positions is answered by plain bulk orjson.
* **Second-hit admission.** A row enters the cache the second time it is missed within
  the doorkeeper's reach (one byte per table row, cleared when too many are set, as
  TinyLFU resets its sketch): one-off rows never displace recurring ones.
* **Sampled bypass.** Hits are counted per window of looked-up ids (or of
  ``WINDOW_REQUESTS`` requests, whichever ends first: one-id requests would otherwise
  pay the cache for 16k requests before the first decision); below
  ``min_hit_rate`` the cache steps aside (bulk orjson over ``np.take``, nothing else),
  except one request in ``sample_every``, and one in ``_WATCH_EVERY`` of more than
  ``_WATCH_MIN`` ids marks its rows in the doorkeeper, so a shift to skewed traffic is
  noticed.
* **Bounded memory.** Texts, per-entry overhead, index and doorkeeper stay under
  ``capacity_bytes``. Slots form a ring swept by a CLOCK hand: a row hit since the hand
  last passed gets another round, the others are overwritten in admission order. A table
  too large for the index to fit in a quarter of the budget is always answered in bulk.

The interface the use cases call is :meth:`RowTextCache.plan` then
:meth:`RowTextCache.render`; the output is byte-identical to
``orjson.dumps(float32 array, option=OPT_SERIALIZE_NUMPY)``.
"""

from __future__ import annotations

import array
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service import metrics

if TYPE_CHECKING:
    from service.settings import ServiceSettings

# Per entry beyond the text: bytes header, slot in the object/owner/size/used arrays.
_ENTRY_OVERHEAD = 96
# Per table row: the slot index (int32) and the doorkeeper byte.
_INDEX_BYTES_PER_ROW = 5
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# A request is spliced from cached texts when at least 1 in this many positions hit.
_SPLICE_MIN_HITS = 8
_EMPTY_IDS = np.empty(0, dtype=np.int64)
# Up to this many ids, a plan is made in plain Python (per-id loops over Python arrays
# beat a dozen numpy calls' fixed cost).
_SCALAR = 64
# While bypassed, requests of more ids than this are watched for recurring rows (a
# one-id request would pay more for it than its lookup costs), one in _WATCH_EVERY at
# random: marks accumulate across windows, so hot rows still show; watching every
# request cost a 32-id request 8% of its encoding.
_WATCH_MIN = 16
_WATCH_EVERY = 4
WINDOW_REQUESTS = 1024  # requests per hit-rate window at most (enough for a rate to ~1%)
# Up to this many ids, de-duplicating in Python beats np.unique's fixed cost.
_SMALL = 256


def inner_texts(rows: np.ndarray) -> list[bytes]:
    """orjson's text of each row of a 2-D float array without its brackets (``1.0,2.0``):
    one orjson call for all rows."""
    if rows.shape[0] == 0:
        return []
    # Numbers never contain brackets, so "],[" separates rows exactly.
    return orjson.dumps(rows, option=_NUMPY)[2:-2].split(b"],[")


def rows_text(rows: np.ndarray) -> list[bytes]:
    """orjson's text of each row of a 2-D float array, as orjson writes it inside a list."""
    return [b"[" + part + b"]" for part in inner_texts(rows)]


def join_rows(texts: list[bytes], ids_shape: tuple[int, ...], flat: bool = False) -> bytes:
    """The JSON of rows given as :func:`inner_texts`, nested to ``ids_shape`` (one list per
    row inside), or one flat list of all their numbers; byte-identical to orjson's.

    Consumes ``texts`` (its end items are rewritten): the brackets go onto the first and
    last rows, so the whole answer is copied once, by one ``bytes.join`` (as fast as
    orjson pasting Fragments; ``b"[" + joined + b"]"`` would copy it twice more)."""
    if not ids_shape and not flat:
        return b"[" + texts[0] + b"]"
    if flat:
        return _joined(texts, b"[", b",", b"]")
    if len(ids_shape) == 1:
        return _joined(texts, b"[[", b"],[", b"]]")
    width = ids_shape[-1]
    level = [
        _joined(texts[i : i + width], b"[[", b"],[", b"]]") for i in range(0, len(texts), width)
    ]
    for size in reversed(ids_shape[1:-1]):
        level = [_joined(level[i : i + size], b"[", b",", b"]") for i in range(0, len(level), size)]
    return _joined(level, b"[", b",", b"]")


def _joined(parts: list[bytes], head: bytes, separator: bytes, tail: bytes) -> bytes:
    """``head + separator.join(parts) + tail`` in one copy (``parts`` is rewritten)."""
    if len(parts) == 1:
        return head + parts[0] + tail
    parts[0] = head + parts[0]
    parts[-1] = parts[-1] + tail
    return separator.join(parts)


@dataclass(slots=True)
class RowTextPlan:
    """What :meth:`RowTextCache.plan` decided for one request.

    ``fetch_ids``: table ids whose final float32 rows the caller gathers, in this order
    (distinct, except in a bulk plan of a cache whose repeats are cheap). Bulk (``items is None``): every position reads ``fetched[inverse]`` (``inverse``
    None when positions and fetched rows agree), zero rows where ``zero``. Spliced:
    ``items`` holds cached row texts, and positions ``miss_at`` read ``fetched[miss_row]``.
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
        self._bulk = _bulk_plan if repeats_cheap else _distinct_bulk_plan
        self.enabled = capacity_bytes > 0
        """False when the budget is 0: callers then encode with plain orjson."""
        self.min_hit_rate = min_hit_rate
        self.window_ids = window_ids
        self.sample_every = max(1, sample_every)
        self._doorkeeper = doorkeeper
        # Each index is a Python array (``_..._py``: what per-id loops index, ~20 ns a read)
        # and a numpy view of the same memory (what vector code indexes).
        self._slot_py, self._slot_of = _shared("i", 0, -1)  # row id -> slot, -1: not cached
        self._door_py, self._door = _shared("B", 0, 0)  # 1: missed once, not admitted yet
        self._door_set = 0
        self._id_span = 0  # 1 + the largest id looked up
        self._texts = np.empty(0, dtype=object)  # slot -> inner text (ring, CLOCK)
        self._owner_py, self._owner = _shared("q", 0, -1)  # slot -> row id, -1 when free
        self._sizes_py, self._sizes = _shared("q", 0, 0)  # slot -> accounted bytes
        self._used_py, self._used = _shared("B", 0, 0)  # slot -> hit since the hand passed
        self._next = 0
        self._entries = 0
        self._text_bytes = 0
        self._too_large = False
        self._legacy_skip = False
        self._zero_texts: dict[int, bytes] = {}
        self.bypass = False
        self._window_seen = 0
        self._window_requests = 0
        self._window_hits = 0.0
        self._counts = {"hits": 0, "misses": 0, "admissions": 0, "evictions": 0, "bypassed": 0}
        self._published = dict.fromkeys(self._counts, 0)
        self._table = table
        self._children: dict[str, Any] | None = None

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
        return self._text_bytes + self._slot_of.size * _INDEX_BYTES_PER_ROW

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
        return {**self._counts, "entries": self._entries, "bytes": self.size_bytes}

    def __len__(self) -> int:
        return self._entries

    # ------------------------------------------------------------------- plan
    def plan(self, ids: np.ndarray) -> RowTextPlan:
        """Decide how to answer ``ids`` (int64 table ids, any shape; -1 = zero vector)."""
        if not self.enabled or ids.size == 0 or self._too_large:
            return self._bulk(ids)
        # The bypass answers all but a random 1 in ``sample_every`` requests in bulk (at
        # random: a fixed stride aliases with clients that rotate a set of bodies).
        if self.bypass and random.random() * self.sample_every >= 1.0:
            self._counts["bypassed"] += 1
            if ids.size > _WATCH_MIN and random.random() * _WATCH_EVERY < 1.0:
                self._watch(ids.reshape(-1))
            return self._bulk(ids)
        flat = ids.reshape(-1)
        if flat.size <= _SCALAR:
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
        if hits:
            self._used[slots[hit]] = 1
        if hits == 0 or hits * _SPLICE_MIN_HITS < flat.size - zeros:
            return _learning_bulk_plan(ids)
        items = self._texts[slots].tolist()  # texts at hits, placeholders elsewhere
        if hits == flat.size:
            return RowTextPlan(_EMPTY_IDS, ids.shape, items=items)
        miss_at = np.flatnonzero(~(hit | zero))
        fetch, miss_row = _distinct(flat[miss_at])
        return RowTextPlan(
            fetch,
            ids.shape,
            items=items,
            miss_at=miss_at.tolist(),
            miss_row=None if miss_row is None else miss_row.tolist(),
            zero_at=np.flatnonzero(zero).tolist() if zeros else None,
        )

    def _skip_for_bypass(self) -> bool:
        """True for a request the bypass answers in bulk (all but 1 in ``sample_every``)."""
        if not self.bypass:
            return False
        # Drawn at random: a fixed stride aliases with clients that rotate a set of bodies.
        if random.random() * self.sample_every >= 1.0:
            self._counts["bypassed"] += 1
            return True
        return False

    def _watch(self, flat: np.ndarray) -> None:
        """While bypassed: mark rows in the doorkeeper and count rows recurring beyond chance.

        Cheap (a few vector operations) and what lets skewed traffic end the bypass: without
        it, a cold cache that went bulk would only learn from 1 request in ``sample_every``.
        """
        if flat.size <= _WATCH_MIN or not self._doorkeeper:
            return
        chance = self._chance()
        marked = self._mark_small(flat) if flat.size <= _SCALAR else self._mark(flat)
        if marked is None:
            return
        self._door_set += marked
        self._reset_full_doorkeeper()
        recurring = flat.size - marked
        self._window(recurring - chance * flat.size, flat.size)  # signed: see _window

    def _mark(self, flat: np.ndarray) -> int | None:
        """Set the doorkeeper marks of ``flat``; how many were not set (None: ids the
        index cannot cover)."""
        if int(flat.min()) < 0 or not self._index_covers(int(flat.max())):
            return None
        door = self._door
        recurring = int(np.count_nonzero(door[flat]))
        door[flat] = 1
        return flat.size - recurring

    def _mark_small(self, flat: np.ndarray) -> int | None:
        """:meth:`_mark` for a few ids, in Python."""
        keys = flat.tolist()
        if min(keys) < 0 or not self._index_covers(max(keys)):
            return None
        door = self._door_py
        marked = 0
        for key in keys:
            if not door[key]:
                door[key] = 1
                marked += 1
        return marked

    def _reset_full_doorkeeper(self) -> None:
        if self._door_set > 2 * max(self._texts.size, self.capacity_bytes // 2048):
            self._door.fill(0)  # TinyLFU-style reset: one-off sightings age out at once
            self._door_set = 0

    def _plan_small(self, ids: np.ndarray, flat: np.ndarray) -> RowTextPlan:
        """:meth:`plan` for a few ids: plain Python beats a dozen numpy calls' fixed cost."""
        keys: list[int] = flat.tolist()
        if max(keys) >= self._slot_of.size and not self._index_covers(max(keys)):
            return self._bulk(ids)
        slot_of, texts, used = self._slot_py, self._texts, self._used_py
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
            return _learning_bulk_plan(ids)
        if not miss_at and not zero_at:
            return RowTextPlan(_EMPTY_IDS, ids.shape, items=items)
        fetch, miss_row = _distinct(flat[miss_at])
        return RowTextPlan(
            fetch,
            ids.shape,
            items=items,
            miss_at=miss_at,
            miss_row=None if miss_row is None else miss_row.tolist(),
            zero_at=zero_at or None,
        )

    def _chance(self) -> float:
        """How often an id drawn uniformly over the ids seen so far finds a doorkeeper mark
        (over the ids' span, not the index: the index grows ahead, up to twice the table)."""
        return self._door_set / max(1, self._id_span)

    def _index_covers(self, max_id: int) -> bool:
        """Grow the per-row index to ``max_id``; False (for good) if it would not fit."""
        if max_id >= self._id_span:
            self._id_span = max_id + 1
        if max_id < self._slot_of.size and self._slot_of.size:
            return True
        rows = max(max_id + 1, 2 * self._slot_of.size, 1024)
        if rows * _INDEX_BYTES_PER_ROW > self.capacity_bytes // 4:
            rows = max_id + 1
            if rows * _INDEX_BYTES_PER_ROW > self.capacity_bytes // 4:
                self._too_large = True
                return False
        slot_py, slot_of = _shared("i", rows, -1)
        slot_of[: self._slot_of.size] = self._slot_of
        door_py, door = _shared("B", rows, 0)
        door[: self._door.size] = self._door
        self._slot_py, self._slot_of, self._door_py, self._door = slot_py, slot_of, door_py, door
        self._evict_over_budget()
        return True

    def _count(self, hits: int, misses: int) -> None:
        counts = self._counts
        counts["hits"] += hits
        counts["misses"] += misses
        self._window(hits, hits + misses)

    def _window(self, good: float, seen: int) -> None:
        """Add to the hit-rate window; at its end, decide whether to bypass the cache.

        ``good``: hits, plus (while bypassed) rows recurring more often than chance would
        make them: they would be hits if the cache admitted them. That excess is signed
        and summed over the window: clipping it at zero per request would add noise's
        positive half every time and end the bypass on ids that never recur.
        """
        self._window_hits += good
        self._window_seen += seen
        self._window_requests += 1
        if self._window_seen >= self.window_ids or self._window_requests >= WINDOW_REQUESTS:
            rate = max(0.0, self._window_hits) / max(1, self._window_seen)
            self._window_requests = 0
            self.bypass = rate < self.min_hit_rate
            self._window_seen, self._window_hits = 0, 0.0
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
        if plan.items is None:
            if plan.admit:
                self._admit(plan.fetch_ids, fetched)
            return _render_bulk(plan, fetched, shape, flat)
        items = plan.items
        if plan.miss_at is not None:
            texts = inner_texts(fetched)
            if plan.miss_row is None:
                for at, text in zip(plan.miss_at, texts, strict=True):
                    items[at] = text
            else:
                for at, index in zip(plan.miss_at, plan.miss_row, strict=True):
                    items[at] = texts[index]
            self._admit_texts(plan.fetch_ids, texts)
        if plan.zero_at is not None:
            zero = self._zero_text(shape[-1])
            for at in plan.zero_at:
                items[at] = zero
        # Nested to the caller's shape: the plan saw the ids flat (sequences pass [B*L] ids).
        return join_rows(items, shape[:-1], flat)

    def _zero_text(self, dim: int) -> bytes:
        text = self._zero_texts.get(dim)
        if text is None:
            text = self._zero_texts[dim] = inner_texts(np.zeros((1, dim), np.float32))[0]
        return text

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
        """Positions of ``ids`` to admit now (``None``: none); marks the doorkeeper."""
        if ids.size == 0:
            return None
        if ids.size <= _SCALAR and self._doorkeeper:  # in Python: a numpy call costs more
            keys = ids.tolist()
            if not self._index_covers(max(keys)):
                return None
            return self._recurring_small(keys) or None
        if not self._index_covers(int(ids.max())):
            return None
        positions = self._recurring(ids)
        return positions if positions.size else None

    def _recurring(self, ids: np.ndarray) -> np.ndarray:
        """Positions of uncached ``ids`` missed before; the doorkeeper notes the others."""
        new = self._slot_of[ids] < 0  # a bulk block also holds rows already cached
        if not self._doorkeeper:
            return np.flatnonzero(new)
        door = self._door
        seen = door[ids] == 1
        recurring = seen & new
        first = new & ~seen
        door[ids[recurring]] = 0
        door[ids[first]] = 1
        n_recurring, n_first = int(np.count_nonzero(recurring)), int(np.count_nonzero(first))
        self._credit_recurrence(n_recurring, n_recurring + n_first)
        self._door_set += n_first - n_recurring
        self._reset_full_doorkeeper()
        return np.flatnonzero(recurring)

    def _credit_recurrence(self, recurring: int, new: int) -> None:
        """Count missed rows that recur beyond chance as good for the window: they will hit
        once admitted (else a warming cache reads as a cold one and is bypassed again)."""
        chance = self._chance()
        self._window_hits += recurring - chance * new  # signed: see _window

    def _recurring_small(self, keys: list[int]) -> list[int]:
        """:meth:`_recurring` for a few ids, without a dozen numpy calls."""
        slot_of, door = self._slot_py, self._door_py
        recurring = []
        new = 0
        for at, key in enumerate(keys):
            if slot_of[key] >= 0:
                continue
            new += 1
            if door[key]:
                door[key] = 0
                self._door_set -= 1
                recurring.append(at)
            else:
                door[key] = 1
                self._door_set += 1
        self._credit_recurrence(len(recurring), new)
        self._reset_full_doorkeeper()
        return recurring

    def _store(self, keys: list[int], texts: list[bytes]) -> None:
        """Put texts in the ring's next slots (evicting what was there)."""
        if self._texts.size == 0:
            self._allocate(len(texts[0]))
        slot_of, owner, sizes, store = self._slot_py, self._owner_py, self._sizes_py, self._texts
        used = self._used_py
        capacity = store.size
        evicted = 0
        hand = self._next
        for key, text in zip(keys, texts, strict=True):
            slot = hand
            for _ in range(capacity):  # CLOCK: a slot hit since the hand passed stays a round
                if not used[slot]:
                    break
                used[slot] = 0
                slot = (slot + 1) % capacity
            hand = (slot + 1) % capacity
            old = owner[slot]
            if old >= 0:
                slot_of[old] = -1
                self._text_bytes -= sizes[slot]
                evicted += 1
            store[slot] = text
            owner[slot] = key
            slot_of[key] = slot
            size = sizes[slot] = len(text) + _ENTRY_OVERHEAD
            self._text_bytes += size
        self._next = hand
        self._entries += len(keys) - evicted
        self._counts["admissions"] += len(keys)
        self._counts["evictions"] += evicted
        self._evict_over_budget()

    def _allocate(self, text_length: int) -> None:
        """Size the ring for the budget left after the index, from one row's text length."""
        budget = self.capacity_bytes - self._slot_of.size * _INDEX_BYTES_PER_ROW
        slots = max(1, budget // (text_length + _ENTRY_OVERHEAD))
        self._texts = np.empty(slots, dtype=object)
        self._owner_py, self._owner = _shared("q", slots, -1)
        self._sizes_py, self._sizes = _shared("q", slots, 0)
        self._used_py, self._used = _shared("B", slots, 0)

    def _evict_over_budget(self) -> None:
        """Free the oldest slots while longer-than-first texts or a grown index overflow."""
        capacity = self._owner.size
        slot = self._next
        while self.size_bytes > self.capacity_bytes and self._entries:
            old = int(self._owner[slot])
            if old >= 0:
                self._slot_of[old] = -1
                self._owner[slot] = -1
                self._texts[slot] = None
                self._text_bytes -= int(self._sizes[slot])
                self._entries -= 1
                self._counts["evictions"] += 1
            slot = (slot + 1) % capacity

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
        children["entries"].set(self._entries)

    # ---------------------------------------------------------------- legacy
    def lookup(self, ids: list[int]) -> tuple[list[bytes | None], list[int]]:
        """Bracketed texts for ``ids`` (``None`` where missing) and the positions that missed.

        Kept for the pre-``plan`` handlers; new code calls :meth:`plan` / :meth:`render`.
        While bypassed, everything misses at once and the following :meth:`store` is skipped.
        """
        self._legacy_skip = not ids or self._too_large or self._skip_for_bypass()
        if self._legacy_skip and self.bypass and len(ids) > _WATCH_MIN:
            self._watch(np.asarray(ids, dtype=np.int64))
        if self._legacy_skip or not self._index_covers(max(ids)):
            self._legacy_skip = True
            return [None] * len(ids), list(range(len(ids)))
        slot_of, texts = self._slot_of, self._texts
        small = len(ids) <= _SCALAR
        slots = [int(slot_of[key]) for key in ids] if small else slot_of[ids].tolist()
        found = [None if s < 0 else b"[" + texts[s] + b"]" for s in slots]
        missing = [i for i, s in enumerate(slots) if s < 0]
        self._count(len(ids) - len(missing), len(missing))
        return found, missing

    def store(self, ids: list[int], texts: list[bytes]) -> None:
        """Remember bracketed texts of rows just encoded (admitted on their second miss)."""
        if not ids or self._legacy_skip or not self._index_covers(max(ids)):
            return
        if len(ids) <= _SCALAR and self._doorkeeper:
            at = self._recurring_small(ids)
        else:
            at = self._recurring(np.asarray(ids, dtype=np.int64)).tolist()
        if at:
            self._store([ids[i] for i in at], [texts[i][1:-1] for i in at])


def _shared(typecode: str, size: int, fill: int) -> tuple[array.array[int], np.ndarray]:
    """``size`` values ``fill`` as a Python array and a numpy view of the same memory."""
    values = array.array(typecode, [fill]) * size
    return values, np.frombuffer(values, dtype=np.dtype(typecode))


def _distinct(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
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


def _learning_bulk_plan(ids: np.ndarray) -> RowTextPlan:
    """Too few hits to beat one orjson call over the block: bulk, but admit recurring rows
    (admission needs each row once)."""
    plan = _distinct_bulk_plan(ids)
    plan.admit = True
    return plan


def _distinct_bulk_plan(ids: np.ndarray) -> RowTextPlan:
    """Every position from one gathered block of distinct ids, and where each position reads."""
    flat = ids.reshape(-1)
    if flat.size == 1 and flat[0] >= 0:
        return RowTextPlan(flat, ids.shape)
    zero = flat < 0
    if zero.any():
        unique, inverse = _distinct(np.where(zero, 0, flat))
        if inverse is None:
            inverse = np.arange(flat.size)
        return RowTextPlan(unique, ids.shape, inverse=inverse, zero=zero)
    unique, inverse = _distinct(flat)
    return RowTextPlan(unique, ids.shape, inverse=inverse)


def _bulk_plan(ids: np.ndarray) -> RowTextPlan:
    """Every position from one gathered block, in request order: a repeated id is gathered
    again (cheaper than finding repeats: np.unique cost ~75 us on 1,024 ids, while a repeat
    costs one row's copy), ids -1 read row 0 and are zeroed."""
    flat = ids.reshape(-1)
    if flat.size == 1 and flat[0] >= 0:
        return RowTextPlan(flat, ids.shape)
    # The common case, checked in Python: no numpy call's cost.
    if 0 < flat.size <= _SCALAR and min(flat.tolist()) >= 0:
        return RowTextPlan(flat, ids.shape)
    zero = flat < 0
    if zero.any():
        return RowTextPlan(np.where(zero, 0, flat), ids.shape, zero=zero)
    return RowTextPlan(flat, ids.shape)


def _render_bulk(
    plan: RowTextPlan, fetched: np.ndarray, shape: tuple[int, ...], flat: bool
) -> bytes:
    block = fetched if plan.inverse is None else fetched.take(plan.inverse, axis=0)
    if plan.zero is not None:
        if plan.inverse is None:  # the caller's rows (maybe the mapped table): never written
            block = block.copy()
        block[plan.zero] = 0
    return orjson.dumps(block.reshape(-1 if flat else shape), option=_NUMPY)
