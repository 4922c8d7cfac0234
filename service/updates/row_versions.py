"""Updated rows indexed by id with every version kept: the overlay of a table up to
``DENSE_MAX_ROWS`` rows.

One dense index, ``positions`` (an int32 per table row: the newest slot of that id, -1 for
none), over slots appended by each refresh: a slot holds one row, the sequence of the refresh
it came with, and in ``previous`` the slot it replaced. So

- a lookup of ``k`` ids costs one gather of ``k`` positions (and a copy of the rows found),
  whatever the number of rows held: no binary search, nothing to merge;
- a refresh bringing ``n`` rows writes ``n`` slots aside (off the event loop; no reader
  looks past the filled slots) and installs them with one scatter into ``positions`` (on the
  loop): ``O(n)``, never a rebuild of what is held;
- a reader still holding an older state (a request planned before the refresh) meets slots
  newer than its sequence and follows ``previous`` back to the version it planned with: an
  answer holds all of an update or none of it.

When the slots run out, the store is rebuilt aside with the newest slot of each id only and
room for twice that: the old states keep reading the arrays they hold, which no install
touches again. Memory: ``4 x table rows`` bytes for the index, and at most twice the live
rows' ``dim x 4`` bytes (``np.empty`` slots are not resident until written).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SLOTS = 1024


@dataclass(frozen=True)
class RowVersions:
    """The arrays a state reads (slots past a state's ``used`` are not its business)."""

    positions: np.ndarray  # (table rows,) int32: the newest slot of each id, -1: none
    previous: np.ndarray  # (slots,) int32: the slot this one replaced, -1: none
    sequences: np.ndarray  # (slots,) int64: the refresh that brought this slot
    rows: np.ndarray  # (slots, dim) float32
    # [slots installed]: a state that used them all has no newer slot to step past.
    installed: np.ndarray
    # One bit per table row, set once the row has a slot (little-endian bit order). Tested
    # before ``positions``: 1/32 of its size stays in the CPU's caches, so a lookup pays a
    # memory access in ``positions`` only for the ids that were updated.
    bits: np.ndarray

    @classmethod
    def allocate(cls, table_rows: int, dim: int, slots: int) -> RowVersions:
        return cls(
            np.full(table_rows, -1, np.int32),
            np.empty(slots, np.int32),
            np.empty(slots, np.int64),
            np.empty((slots, dim), np.float32),
            np.zeros(1, np.int64),
            np.zeros((table_rows + 7) // 8, np.uint8),
        )

    def mark(self, ids: np.ndarray) -> None:
        """Set the bits of ``ids``."""
        np.bitwise_or.at(self.bits, ids >> 3, np.left_shift(1, ids & 7).astype(np.uint8))

    def maybe_updated(self, ids: np.ndarray) -> np.ndarray:
        """The places in ``ids`` whose bit is set (their ``positions`` are worth reading)."""
        places: np.ndarray = ((self.bits.take(ids >> 3) >> (ids & 7)) & 1).nonzero()[0]
        return places

    @property
    def slots(self) -> int:
        return int(self.previous.size)


@dataclass(frozen=True)
class DenseState:
    """The updates up to ``sequence``: ``used`` slots of ``store``, ``rows`` distinct ids."""

    sequence: int
    store: RowVersions
    used: int
    rows: int

    def patch(self, ids: np.ndarray, rows: np.ndarray, off_loop: bool = False) -> np.ndarray:
        """Overwrite the rows of ``rows`` (gathered for 1-D ``ids``) this state updated; the
        places (in ``ids``) overwritten. ``off_loop``: called from another thread than the
        event loop's, which may be installing a refresh meanwhile: every slot's sequence is
        checked (no reliance on the order another CPU sees the loop's stores in)."""
        store = self.store
        hit = store.maybe_updated(ids)
        if hit.size == 0:
            return hit
        slots = store.positions.take(ids.take(hit))
        if off_loop or store.installed[0] != self.used:
            hit, slots = self._held_versions(hit, slots)
        rows[hit] = store.rows.take(slots, axis=0)
        return hit

    def updated_between(self, start: int, stop: int) -> np.ndarray:
        """Ids in ``[start, stop)`` that may have an updated row (``patch`` says which do)."""
        return (self.store.positions[start:stop] >= 0).nonzero()[0] + start

    def _held_versions(self, hit: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step past slots installed after this state, back to the versions it holds."""
        store = self.store
        held = slots >= 0  # a bit set before its position, seen from another thread
        if not held.all():
            hit, slots = hit[held], slots[held]
        while True:
            newer = (store.sequences.take(slots) > self.sequence).nonzero()[0]
            if newer.size == 0:
                return hit, slots
            slots[newer] = store.previous.take(slots.take(newer))
            held = slots >= 0
            if not held.all():
                hit, slots = hit[held], slots[held]


@dataclass(frozen=True)
class DenseRefresh:
    """A refresh prepared aside: its rows already in ``store``'s slots from ``first``."""

    store: RowVersions
    ids: np.ndarray  # unique
    first: int
    sequence: int
    rows: int  # distinct ids held once installed

    def install(self) -> DenseState:
        """Point the index at the new slots (one scatter; on the event loop)."""
        used = self.first + self.ids.size
        # Counted first: a reader on another thread (a neighbour search) that meets a new slot
        # has already seen the count move, and steps back past it.
        self.store.installed[0] = used
        self.store.mark(self.ids)
        self.store.positions[self.ids] = np.arange(self.first, used, dtype=np.int32)
        return DenseState(self.sequence, self.store, used, self.rows)


def prepare_refresh(
    current: DenseState | None,
    table_rows: int,
    ids: np.ndarray,
    rows: np.ndarray,
    sequence: int,
) -> DenseRefresh:
    """Write unique ``ids``' float32 ``rows`` (the newest of each, up to ``sequence``) into
    free slots of ``current``'s store, or of a rebuilt one when they do not fit."""
    store, used, held = _room_for(current, table_rows, rows.shape[1], ids.size)
    end = used + ids.size
    replaced = store.positions[ids]
    store.rows[used:end] = rows
    store.sequences[used:end] = sequence
    store.previous[used:end] = replaced
    added = int(np.count_nonzero(replaced < 0))
    return DenseRefresh(store, ids, used, sequence, held + added)


def _room_for(
    current: DenseState | None, table_rows: int, dim: int, count: int
) -> tuple[RowVersions, int, int]:
    """A store with ``count`` free slots: (store, slots used, distinct ids held)."""
    if current is not None and current.used + count <= current.store.slots:
        return current.store, current.used, current.rows
    held = 0 if current is None else current.rows
    fresh = RowVersions.allocate(table_rows, dim, max(MIN_SLOTS, 2 * (held + count)))
    if current is None or not held:
        return fresh, 0, 0
    # The newest slot of each id (the current state's: nothing newer is installed).
    ids = np.flatnonzero(current.store.positions >= 0)
    old = current.store.positions[ids]
    fresh.rows[:held] = current.store.rows[old]
    fresh.sequences[:held] = current.store.sequences[old]
    fresh.previous[:held] = -1
    fresh.positions[ids] = np.arange(held, dtype=np.int32)
    fresh.mark(ids)
    fresh.installed[0] = held
    return fresh, held, held
