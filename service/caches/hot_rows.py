"""A bounded cache of hot table rows: one preallocated array, an id -> slot index, CLOCK.

CLOCK (second chance) approximates LRU with one reference bit per slot: a hit only
sets a bit (no list reordering), eviction sweeps a hand over the slots and takes
the first whose bit is clear, clearing bits on the way. On Zipf-skewed ids it keeps
the hot head (measured hit rates in docs/redis.md). Memory: ``capacity x dim x
itemsize`` for the rows plus ~100 bytes of index per cached row.

Updates: a read of Redis that began before an update's ``discard`` may hold the replaced
row, so what it read is stored only for ids not discarded since it began (``generation``
remembered before the read, ``store_if_fresh`` after). The ids of the recent discards are
kept for that (bounded); a read older than what they cover, or than a ``clear``, stores
nothing. An update of other rows never keeps a read's rows out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import repeat

import numpy as np

# How many recent discards (and ids in them) are remembered to judge reads still in flight:
# a read lasts at most the table's Redis timeout; these cover seconds of 10,000 rows/s.
RECENT_DISCARDS = 4096
RECENT_DISCARDED_IDS = 1 << 16


class HotRowCache:
    """Rows by id for one table version; not thread-safe (used on the event loop only)."""

    def __init__(self, capacity: int, dim: int, dtype: np.dtype) -> None:
        self.capacity = capacity
        self.rows = np.empty((capacity, dim), dtype=dtype)
        self._slot_of: dict[int, int] = {}
        self._id_in = [-1] * capacity  # id held by each slot, -1 when free
        self._referenced = bytearray(capacity)
        # The same bits as an array: hits set theirs in one vectorised store.
        self._referenced_view = np.frombuffer(self._referenced, np.uint8)
        self._hand = 0
        self.hits = 0
        self.misses = 0
        # Bumped by ``discard`` and ``clear``: a read remembers it before it asks Redis.
        self.generation = 0
        # The recent discards: (generation, ids), and each id's latest discard among them.
        self._discards: deque[tuple[int, list[int]]] = deque()
        self._discarded_at: dict[int, int] = {}
        self._discarded_ids = 0
        # Reads that began before this generation store nothing (a clear, or discards
        # forgotten since: their ids are not known any more).
        self._known_since = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes)

    def lookup(self, id_list: list[int]) -> np.ndarray:
        """Slot of each id (``-1`` where missing); hits get their reference bit set."""
        slots = np.fromiter(
            map(self._slot_of.get, id_list, repeat(-1)), np.int64, count=len(id_list)
        )
        hit = slots[slots >= 0]
        self._referenced_view[hit] = 1
        self.hits += hit.size
        self.misses += slots.size - hit.size
        return slots

    def store(self, ids: list[int], rows: np.ndarray) -> None:
        """Remember ``rows`` (one per id of ``ids``, unique), evicting by CLOCK.

        Each slot is assigned at most once per call: when the sweep comes back to a slot
        this call filled, the remaining ids are not cached (they are read again later).

        Ids cached meanwhile (by another batch that read Redis at the same time) are skipped.
        """
        if self.capacity == 0:
            return
        cached = self._slot_of
        if any(i in cached for i in ids):
            keep = [n for n, i in enumerate(ids) if i not in cached]
            ids, rows = [ids[n] for n in keep], rows[keep]
        if len(ids) > self.capacity:  # only the last ones fit; keep those
            ids, rows = ids[-self.capacity :], rows[-self.capacity :]
        slots: list[int] = []
        for key in ids:
            slot = self._free_slot(slots)
            if slot < 0:
                break
            self._slot_of[key] = slot
            self._id_in[slot] = key
            slots.append(slot)
        self.rows[slots] = rows[: len(slots)]

    def store_if_fresh(self, generation: int, ids: list[int], rows: np.ndarray) -> None:
        """``store`` rows read when the cache was at ``generation``, except those of ids
        discarded since (a row read before an update's discard may be the replaced one)."""
        if generation == self.generation:
            self.store(ids, rows)
            return
        if generation < self._known_since:
            return  # a clear since, or discards no longer remembered: any row may be old
        discarded_at = self._discarded_at
        keep = [n for n, key in enumerate(ids) if discarded_at.get(key, -1) <= generation]
        if len(keep) == len(ids):
            self.store(ids, rows)
        elif keep:
            self.store([ids[n] for n in keep], rows[keep])

    def clear(self) -> None:
        """Forget every row (an update whose rows are not known)."""
        self.generation += 1
        self._known_since = self.generation
        self._discards.clear()
        self._discarded_at.clear()
        self._discarded_ids = 0
        self._slot_of.clear()
        self._id_in = [-1] * self.capacity
        self._referenced[:] = bytes(self.capacity)

    def discard(self, ids: Iterable[int]) -> None:
        """Forget the rows of ``ids`` (rows that changed); other rows stay cached."""
        self.generation += 1
        if self.capacity == 0:
            return  # nothing cached, nothing ever stored: no read to judge
        generation = self.generation
        dropped = list(ids)
        slot_of, id_in, referenced = self._slot_of, self._id_in, self._referenced
        discarded_at = self._discarded_at
        for key in dropped:
            discarded_at[key] = generation
            slot = slot_of.pop(key, -1)
            if slot >= 0:
                id_in[slot] = -1  # free: the hand takes it without evicting anyone
                referenced[slot] = 0
        self._discards.append((generation, dropped))
        self._discarded_ids += len(dropped)
        self._forget_old_discards()

    def _forget_old_discards(self) -> None:
        """Keep the recent discards within bounds; reads older than those forgotten store
        nothing (``_known_since``)."""
        discards, discarded_at = self._discards, self._discarded_at
        while len(discards) > RECENT_DISCARDS or self._discarded_ids > RECENT_DISCARDED_IDS:
            generation, dropped = discards.popleft()
            self._discarded_ids -= len(dropped)
            self._known_since = generation
            for key in dropped:
                if discarded_at.get(key) == generation:
                    del discarded_at[key]

    def _free_slot(self, taken: list[int]) -> int:
        """The next slot by CLOCK, or ``-1`` when the hand comes back to a slot in ``taken``.

        ``taken`` are the slots assigned by this ``store`` call: a full sweep would evict
        them again (they start unreferenced), and one slot assigned twice in one fancy
        index store leaves which row lands there unspecified. So admission stops there.
        """
        referenced = self._referenced
        id_in = self._id_in
        hand = self._hand
        capacity = self.capacity
        first = taken[0] if taken else -1
        while True:
            if hand == first:  # slots are taken in hand order: the first comes back first
                self._hand = hand
                return -1
            if id_in[hand] < 0:
                break
            if referenced[hand]:
                referenced[hand] = 0
            else:
                del self._slot_of[id_in[hand]]
                id_in[hand] = -1
                break
            hand = hand + 1 if hand + 1 < capacity else 0
        # A new entry starts unreferenced: it must be hit once to get a second chance.
        self._hand = hand + 1 if hand + 1 < capacity else 0
        return hand
