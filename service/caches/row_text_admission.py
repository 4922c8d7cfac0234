"""The row-text cache's admission and bypass policy: which missed rows enter, and when the
cache steps aside.

* **Second-hit admission.** A row enters the cache the second time it is missed within
  the doorkeeper's reach (one byte per table row, cleared when too many are set, as
  TinyLFU resets its sketch): one-off rows never displace recurring ones.
* **Sampled bypass.** Hits are counted per window of looked-up ids (or of
  ``WINDOW_REQUESTS`` requests, whichever ends first: one-id requests would otherwise
  pay the cache for 16k requests before the first decision); below ``min_hit_rate`` the
  cache steps aside (bulk orjson, nothing else), except one request in ``sample_every``,
  and one in ``_WATCH_EVERY`` of more than ``_WATCH_MIN`` ids marks its rows in the
  doorkeeper, so a shift to skewed traffic is noticed.

The policy owns the doorkeeper and the window; the cache owns the index and the texts,
passes its index to the policy's per-request calls, and grows the doorkeeper with it.
"""

from __future__ import annotations

import array
import random
import weakref
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from service.caches.row_text_plans import SCALAR
from service.caches.shared_array import shared_array

# While bypassed, requests of more ids than this are watched for recurring rows (a
# one-id request would pay more for it than its lookup costs), one in _WATCH_EVERY at
# random: marks accumulate across windows, so hot rows still show; watching every
# request cost a 32-id request 8% of its encoding.
_WATCH_MIN = 16
_WATCH_EVERY = 4
_Method = TypeVar("_Method", bound=Callable[..., object])
WINDOW_REQUESTS = 1024  # requests per hit-rate window at most (enough for a rate to ~1%)
# The doorkeeper is cleared at twice the ring's slots, or twice one mark per this many bytes
# of the cache's budget, whichever is more (see ring_sized).
_DOOR_BYTES_PER_TEXT = 2048


class AdmissionPolicy:
    """Second-hit admission through a doorkeeper, and the sampled bypass of one cache.

    ``covers(max_id)``: the cache's index grows to ``max_id`` (and calls :meth:`grow`), or
    says it cannot. ``counts``: the cache's event counters (this adds ``bypassed``).
    ``on_window_end``: called when a hit-rate window closes (the cache publishes metrics).
    Both are methods of the cache, held weakly: the cache holds its policy, and a strong
    reference back would make a cycle, so a replaced table's cache (up to the whole budget
    of texts) would wait for the cyclic garbage collector instead of being freed at once.
    """

    def __init__(
        self,
        capacity_bytes: int,
        counts: dict[str, int],
        covers: Callable[[int], bool],
        on_window_end: Callable[[], None],
        *,
        min_hit_rate: float,
        window_ids: int,
        sample_every: int,
        doorkeeper: bool,
    ) -> None:
        self.min_hit_rate = min_hit_rate
        self.window_ids = window_ids
        self.sample_every = max(1, sample_every)
        self.doorkeeper = doorkeeper
        self.bypass = False
        """True while the hit rate is below ``min_hit_rate``: requests go bulk, but samples."""
        self._counts = counts
        self._covers = weakref.WeakMethod(covers)
        self._on_window_end = weakref.WeakMethod(on_window_end)
        self._capacity_bytes = capacity_bytes
        self._door_py, self._door = shared_array("B", 0, 0)  # 1: missed once, not admitted yet
        self._door_set = 0
        self._door_limit = 2 * (capacity_bytes // _DOOR_BYTES_PER_TEXT)
        self.id_span = 0
        """1 + the largest id looked up (the cache's index updates it)."""
        self._window_seen = 0
        self._window_requests = 0
        self._window_hits = 0.0

    # ---------------------------------------------------------------- sizing
    def grow(self, rows: int) -> None:
        """Give the doorkeeper a byte for each of ``rows`` table rows, keeping its marks."""
        door_py, door = shared_array("B", rows, 0)
        door[: self._door.size] = self._door
        self._door_py, self._door = door_py, door

    def ring_sized(self, slots: int) -> None:
        """The cache's ring now holds ``slots`` texts: the doorkeeper is cleared at twice that
        many marks (or twice one per 2 kB of budget, whichever is more)."""
        self._door_limit = 2 * max(slots, self._capacity_bytes // _DOOR_BYTES_PER_TEXT)

    # ---------------------------------------------------------------- bypass
    def steps_aside(self, ids: np.ndarray) -> bool:
        """While :attr:`bypass`: True for a request to answer in bulk (all but a random 1 in
        ``sample_every``: a fixed stride aliases with clients that rotate a set of bodies);
        some of those are watched for recurring rows."""
        if random.random() * self.sample_every < 1.0:
            return False
        self._counts["bypassed"] += 1
        if ids.size > _WATCH_MIN and random.random() * _WATCH_EVERY < 1.0:
            self._watch(ids.reshape(-1))
        return True

    def _watch(self, flat: np.ndarray) -> None:
        """While bypassed: mark rows in the doorkeeper and count rows recurring beyond chance.

        Cheap (a few vector operations) and what lets skewed traffic end the bypass: without
        it, a cold cache that went bulk would only learn from 1 request in ``sample_every``.
        """
        if flat.size <= _WATCH_MIN or not self.doorkeeper:
            return
        chance = self._chance()
        marked = self._mark_small(flat) if flat.size <= SCALAR else self._mark(flat)
        if marked is None:
            return
        self._door_set += marked
        self._reset_full_doorkeeper()
        recurring = flat.size - marked
        self.window(recurring - chance * flat.size, flat.size)  # signed: see window

    def _mark(self, flat: np.ndarray) -> int | None:
        """Set the doorkeeper marks of ``flat``; how many were not set (None: ids the
        index cannot cover)."""
        if int(flat.min()) < 0 or not _alive(self._covers)(int(flat.max())):
            return None
        door = self._door
        recurring = int(np.count_nonzero(door[flat]))
        door[flat] = 1
        return flat.size - recurring

    def _mark_small(self, flat: np.ndarray) -> int | None:
        """:meth:`_mark` for a few ids, in Python."""
        keys = flat.tolist()
        if min(keys) < 0 or not _alive(self._covers)(max(keys)):
            return None
        door = self._door_py
        marked = 0
        for key in keys:
            if not door[key]:
                door[key] = 1
                marked += 1
        return marked

    def window(self, good: float, seen: int) -> None:
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
            _alive(self._on_window_end)()

    # ------------------------------------------------------------- admission
    def recurring(self, ids: np.ndarray, slot_of: np.ndarray) -> np.ndarray:
        """Positions of uncached ``ids`` (by the index ``slot_of``) missed before; the
        doorkeeper notes the others. Without a doorkeeper, every uncached id."""
        new = slot_of[ids] < 0  # a bulk block also holds rows already cached
        if not self.doorkeeper:
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

    def recurring_small(self, keys: list[int], slot_of: array.array[int]) -> list[int]:
        """:meth:`recurring` for a few ids with a doorkeeper, without a dozen numpy calls
        (``slot_of``: the index as a Python array)."""
        door = self._door_py
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

    def _credit_recurrence(self, recurring: int, new: int) -> None:
        """Count missed rows that recur beyond chance as good for the window: they will hit
        once admitted (else a warming cache reads as a cold one and is bypassed again)."""
        chance = self._chance()
        self._window_hits += recurring - chance * new  # signed: see window

    def _chance(self) -> float:
        """How often an id drawn uniformly over the ids seen so far finds a doorkeeper mark
        (over the ids' span, not the index: the index grows ahead, up to twice the table)."""
        return self._door_set / max(1, self.id_span)

    def _reset_full_doorkeeper(self) -> None:
        if self._door_set > self._door_limit:
            self._door.fill(0)  # TinyLFU-style reset: one-off sightings age out at once
            self._door_set = 0


def _alive(method: weakref.WeakMethod[_Method]) -> _Method:
    """The method behind a weak reference (its object, the cache, outlives its policy)."""
    bound = method()
    assert bound is not None
    return bound
