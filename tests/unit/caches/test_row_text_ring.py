"""The row-text ring: CLOCK order, budget shrinking, and free slots not walked twice."""

from __future__ import annotations

from service.caches.row_text_ring import ENTRY_OVERHEAD, TextRing
from service.caches.shared_array import shared_array


def _held(ring: TextRing) -> list[int]:
    return [key for key in ring.owner_py if key >= 0]


def test_texts_longer_than_the_first_free_the_oldest_slots_once() -> None:
    """A ring sized for 8 texts of 4 bytes, fed 8-byte texts: the budget holds fewer, the
    oldest go first, and the free slots ahead of the hand are skipped, not walked again."""
    slot_of, _ = shared_array("i", 100, -1)
    ring = TextRing()
    ring.allocate(8)
    budget = 8 * (4 + ENTRY_OVERHEAD)
    walked: list[int] = []
    for key in range(40):
        ring.store([key], [b"12345678"], slot_of)
        free_before = ring.owner.size - ring.entries
        ring.shrink_to(budget, slot_of)
        assert ring.text_bytes <= budget
        walked.append(ring._free_ahead - free_before)
        held = _held(ring)
        assert sorted(held) == list(range(key - len(held) + 1, key + 1))  # the newest
        assert all(slot_of[k] >= 0 for k in held) and slot_of[:].count(-1) == 100 - len(held)
        hand, ahead = ring._hand, ring._free_ahead
        assert all(ring.owner_py[(hand + i) % 8] < 0 for i in range(ahead))
    assert len(_held(ring)) == budget // (8 + ENTRY_OVERHEAD)
    assert max(walked[10:]) <= 1  # steady state: one slot freed a store, no walk


def test_clock_gives_a_used_slot_another_round() -> None:
    slot_of, _ = shared_array("i", 10, -1)
    ring = TextRing()
    ring.allocate(3)
    ring.store([0, 1, 2], [b"a", b"b", b"c"], slot_of)
    ring.used_py[slot_of[0]] = 1  # row 0 hit since the hand passed
    assert ring.store([3], [b"d"], slot_of) == 1
    assert sorted(_held(ring)) == [0, 2, 3]  # 1 evicted, not 0
