"""The updated rows of one file-table version, held in memory and patched into gathered rows.

Every process serving the version keeps one ``UpdateOverlay``. ``refresh()`` reads the update
files written since it last looked (``catch_up``), builds the next state aside and swaps one
reference: a gather that read the state before the swap applies none of a new update's rows,
one that read it after applies all of them -- a response never holds part of an update.

State: two sorted id arrays with their float32 rows, a large ``settled`` one and a small
``recent`` one that takes each refresh (cheap to rebuild); ``recent`` is folded into
``settled`` when it outgrows ``max(RECENT_ROWS, settled / 8)``, so a refresh costs
``O(recent)`` amortised. ``settled`` has a dense index (one int32 per table row, tables up to
``DENSE_MAX_ROWS``): a lookup of ``k`` ids costs one gather there and a binary search in
``recent``, ``O(k log RECENT_ROWS)``; beyond that size ``settled`` is searched too,
``O(k log n)`` for ``n`` updated rows. ``refresh`` runs in one task at a time. With no update at all the state is ``None``: ``apply`` costs one
attribute check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.updates.catch_up import files_after
from service.updates.delta_files import UpdateFile

RECENT_ROWS = 4096
DENSE_MAX_ROWS = 16 << 20  # a dense index of at most 64 MiB per process and version
_NO_IDS = np.empty(0, np.int64)


def newest_rows(ids: list[np.ndarray], rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ids of ``ids`` (oldest first) and, for each, its row from the newest."""
    every = np.concatenate(ids)
    values = np.concatenate(rows)
    unique, first_from_end = np.unique(every[::-1], return_index=True)
    return unique, values[every.size - 1 - first_from_end]


@dataclass(frozen=True)
class RowSet:
    """Sorted unique ``ids`` and their float32 ``rows`` (``positions``: a dense index of them)."""

    ids: np.ndarray
    rows: np.ndarray
    # (table rows,) int32: each id's place in ``rows``, -1 when not held. Lookups in one
    # gather instead of a binary search; 4 bytes per table row, so only up to DENSE_MAX_ROWS.
    positions: np.ndarray | None = None

    @classmethod
    def empty(cls, dim: int) -> RowSet:
        return cls(_NO_IDS, np.empty((0, dim), np.float32))

    def newer(self, ids: np.ndarray, rows: np.ndarray) -> RowSet:
        """These rows with ``ids``/``rows`` laid over them (the later of an id wins)."""
        return RowSet(*newest_rows([self.ids, ids], [self.rows, rows.astype(np.float32)]))

    def indexed(self, table_rows: int | None) -> RowSet:
        """These rows with a dense index, when the table is small enough for one."""
        if table_rows is None or table_rows > DENSE_MAX_ROWS or self.ids.size == 0:
            return self
        positions = np.full(table_rows, -1, np.int32)
        positions[self.ids] = np.arange(self.ids.size, dtype=np.int32)
        return RowSet(self.ids, self.rows, positions)

    def patch(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Overwrite the rows of ``rows`` whose id (in ``ids``, all in the table) is held here."""
        if self.ids.size == 0:
            return
        if self.positions is not None:
            place = self.positions[ids]
            found = place >= 0
            if found.any():
                rows[found] = self.rows[place[found]]
            return
        at = np.searchsorted(self.ids, ids)
        np.minimum(at, self.ids.size - 1, out=at)
        hit = self.ids[at] == ids
        if hit.any():
            rows[hit] = self.rows[at[hit]]


@dataclass(frozen=True)
class OverlayState:
    """What one refresh saw: every update up to ``sequence``."""

    sequence: int
    settled: RowSet
    recent: RowSet

    @property
    def rows(self) -> int:
        return int(self.settled.ids.size + self.recent.ids.size)


def apply_state(state: OverlayState | None, ids: np.ndarray, rows: np.ndarray) -> None:
    """Patch float32 ``rows`` (gathered for ``ids``, C-contiguous) with ``state``'s rows."""
    if state is None:
        return
    flat_ids = ids.reshape(-1)
    flat_rows = rows.reshape(flat_ids.size, -1)  # a view: gathered rows are contiguous
    state.settled.patch(flat_ids, flat_rows)
    state.recent.patch(flat_ids, flat_rows)


@dataclass(frozen=True)
class PendingState:
    """A state built aside from the overlay at sequence ``after``, and the files it read."""

    after: int
    state: OverlayState
    files: list[UpdateFile]


class UpdateOverlay:
    """The updates of one table version, as seen by this process (``refresh`` to see more).

    ``skip_through``: updates the served base file already holds (a compacted base), never
    loaded. ``refresh`` raises ``OverlayStale`` when updates this reader lacks were folded
    into a newer base file: the table must then be loaded again.
    """

    def __init__(
        self, folder: Path, dim: int, skip_through: int = 0, table_rows: int | None = None
    ) -> None:
        self.folder = folder
        self.dim = dim
        self.table_rows = table_rows  # given: settled rows get a dense index (DENSE_MAX_ROWS)
        self.skip_through = skip_through
        self.state: OverlayState | None = None  # None: no update to apply
        self._sequence = skip_through

    @property
    def sequence(self) -> int:
        """The newest update this overlay holds (or its base file does)."""
        return self._sequence

    @property
    def rows(self) -> int:
        state = self.state
        return 0 if state is None else state.rows

    def apply(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Patch ``rows`` (gathered for ``ids``: shape ``ids.shape + (dim,)``) in place.

        ``ids`` are rows of the table (as the gather took them); ``rows`` are C-contiguous.
        """
        apply_state(self.state, ids, rows)

    def refresh(self) -> np.ndarray:
        """Take in the updates written since the last refresh; the ids they changed."""
        return self.install(self.prepare())

    def prepare(self) -> PendingState | None:
        """Read the updates written since the last install and build the next state aside
        (file work: off the event loop); None when there is nothing new."""
        files = files_after(self.folder, self._sequence)
        if not files:
            return None
        return PendingState(self._sequence, self._next_state(files), files)

    def install(self, pending: PendingState | None) -> np.ndarray:
        """Swap in a state ``prepare`` built (one reference: readers see all of its updates
        or none); the ids it changed. A state built from an older one than now is dropped
        (prepare again)."""
        if pending is None or pending.after != self._sequence:
            return _NO_IDS
        self.state = pending.state  # the one swap
        self._sequence = pending.state.sequence
        return np.unique(np.concatenate([f.ids for f in pending.files]))

    def _next_state(self, files: list[UpdateFile]) -> OverlayState:
        current = self.state
        settled = RowSet.empty(self.dim) if current is None else current.settled
        recent = RowSet.empty(self.dim) if current is None else current.recent
        for update in files:
            recent = recent.newer(update.ids, update.rows)
        if recent.ids.size > max(RECENT_ROWS, settled.ids.size // 8):
            settled = settled.newer(recent.ids, recent.rows).indexed(self.table_rows)
            recent = RowSet.empty(self.dim)
        return OverlayState(files[-1].sequence, settled, recent)
