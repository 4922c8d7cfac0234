"""The row-text cache's storage: texts in a fixed ring of slots, overwritten in CLOCK order.

A slot hit since the hand last passed gets another round (its ``used`` byte, set by the
cache on a hit, is cleared as the hand passes); the others are overwritten in admission
order. FIFO alone evicted hot Zipf rows, which then paid two misses to come back.

The ring knows slot -> row id; the cache's index (row id -> slot, a Python array) is
passed in to every call that fills or empties a slot, and kept in step here.

The ring is sized from the first text's length; texts longer than that leave some slots
free for good (the budget is spent). Those free slots gather just ahead of the hand (they
are freed there and refilled in order), so the ring remembers how many lie there rather
than walking them again on every admission (it did: ~1,000 free slots, 0.4 ms a 1-id
request with first-sight admission on uniform ids).
"""

from __future__ import annotations

import array

import numpy as np

from service.caches.shared_array import shared_array

ENTRY_OVERHEAD = 96
"""Accounted bytes per entry beyond its text: bytes header, a slot in each slot array."""


class TextRing:
    """Slots of row texts; ``*_py`` arrays and their numpy views share memory (see
    :mod:`service.caches.shared_array`)."""

    def __init__(self) -> None:
        self.texts = np.empty(0, dtype=object)
        """slot -> inner text of the row it holds (None when free)."""
        self.owner_py, self.owner = shared_array("q", 0, -1)  # slot -> row id, -1 when free
        self.sizes_py, self.sizes = shared_array("q", 0, 0)  # slot -> accounted bytes
        self.used_py, self.used = shared_array("B", 0, 0)  # slot -> hit since the hand passed
        self.entries = 0
        self.text_bytes = 0
        """Accounted bytes of the texts held, with their per-entry overhead."""
        self._hand = 0
        # Slots [hand, hand + free_ahead) are all free (so their used bytes are 0): stores
        # fill them in order, one per text; shrink_to starts past them.
        self._free_ahead = 0

    def allocate(self, slots: int) -> None:
        """Make ``slots`` empty slots (once: the first admission sizes the ring)."""
        self.texts = np.empty(slots, dtype=object)
        self.owner_py, self.owner = shared_array("q", slots, -1)
        self.sizes_py, self.sizes = shared_array("q", slots, 0)
        self.used_py, self.used = shared_array("B", slots, 0)
        self._hand, self._free_ahead = 0, slots

    def store(self, keys: list[int], texts: list[bytes], slot_of: array.array[int]) -> int:
        """Put texts in the next slots by CLOCK; how many cached rows were evicted."""
        owner, sizes, store, used = self.owner_py, self.sizes_py, self.texts, self.used_py
        capacity = store.size
        evicted = 0
        hand = self._hand
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
                self.text_bytes -= sizes[slot]
                evicted += 1
            store[slot] = text
            owner[slot] = key
            slot_of[key] = slot
            size = sizes[slot] = len(text) + ENTRY_OVERHEAD
            self.text_bytes += size
        self._hand = hand
        self._free_ahead = max(0, self._free_ahead - len(keys))
        self.entries += len(keys) - evicted
        return evicted

    def shrink_to(self, text_budget: int, slot_of: array.array[int]) -> int:
        """Free the occupied slots next under the hand while the texts exceed
        ``text_budget`` (texts longer than the first, or an index grown into the budget);
        how many were freed."""
        capacity = self.owner.size
        ahead = self._free_ahead
        slot = (self._hand + ahead) % capacity
        freed = 0
        while self.text_bytes > text_budget and self.entries:
            if self.owner_py[slot] >= 0:
                self.free(slot, slot_of)
                freed += 1
            ahead += 1  # free now, and contiguous with the free slots before it
            slot = (slot + 1) % capacity
        self._free_ahead = min(ahead, capacity)
        return freed

    def free(self, slot: int, slot_of: array.array[int]) -> None:
        """Empty an occupied slot: its row is no longer cached."""
        slot_of[self.owner_py[slot]] = -1
        self.owner_py[slot] = -1
        self.texts[slot] = None
        self.used_py[slot] = 0
        self.text_bytes -= self.sizes_py[slot]
        self.entries -= 1
