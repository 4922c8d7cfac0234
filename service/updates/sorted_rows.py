"""Updated rows as sorted id arrays: the overlay of a table past ``DENSE_MAX_ROWS`` rows.

A state is two sorted id arrays with their float32 rows, a large ``settled`` one and a small
``recent`` one that takes each refresh (cheap to rebuild); ``recent`` is folded into
``settled`` when it outgrows ``max(RECENT_ROWS, settled / 8)``, so a refresh costs
``O(recent)`` amortised and a lookup of ``k`` ids over ``n`` held rows ``O(k log n)``. Memory:
the rows held, with no per-table-row index (which ``row_versions`` needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.updates.delta_files import UpdateFile

RECENT_ROWS = 4096
_NO_IDS = np.empty(0, np.int64)


def newest_rows(ids: list[np.ndarray], rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ids of ``ids`` (oldest first) and, for each, its row from the newest."""
    every = np.concatenate(ids)
    values = np.concatenate(rows)
    unique, first_from_end = np.unique(every[::-1], return_index=True)
    return unique, values[every.size - 1 - first_from_end]


@dataclass(frozen=True)
class RowSet:
    """Sorted unique ``ids`` and their float32 ``rows``."""

    ids: np.ndarray
    rows: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> RowSet:
        return cls(_NO_IDS, np.empty((0, dim), np.float32))

    def newer(self, ids: np.ndarray, rows: np.ndarray) -> RowSet:
        """These rows with ``ids``/``rows`` laid over them (the later of an id wins)."""
        return RowSet(*newest_rows([self.ids, ids], [self.rows, rows.astype(np.float32)]))

    def patch(self, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Overwrite the rows of ``rows`` whose id (in ``ids``, all in the table) is held here;
        the places (in ``ids``) overwritten."""
        if self.ids.size == 0:
            return _NO_IDS
        at = np.searchsorted(self.ids, ids)
        np.minimum(at, self.ids.size - 1, out=at)
        hit = np.flatnonzero(self.ids[at] == ids)
        if hit.size:
            rows[hit] = self.rows[at[hit]]
        return hit


@dataclass(frozen=True)
class SortedState:
    """The updates up to ``sequence``: a large ``settled`` set and a small ``recent`` one."""

    sequence: int
    settled: RowSet
    recent: RowSet

    @classmethod
    def empty(cls, dim: int) -> SortedState:
        return cls(0, RowSet.empty(dim), RowSet.empty(dim))

    @property
    def rows(self) -> int:
        return int(self.settled.ids.size + self.recent.ids.size)

    def patch(self, ids: np.ndarray, rows: np.ndarray, off_loop: bool = False) -> np.ndarray:
        """Overwrite the rows of ``rows`` (gathered for 1-D ``ids``) this state updated; the
        places (in ``ids``) overwritten (``off_loop``: nothing changes, states are whole)."""
        settled = self.settled.patch(ids, rows)
        recent = self.recent.patch(ids, rows)
        if settled.size and recent.size:
            return np.union1d(settled, recent)
        return settled if settled.size else recent

    def updated_between(self, start: int, stop: int) -> np.ndarray:
        """Ids in ``[start, stop)`` that have an updated row, sorted."""
        parts = [
            held.ids[np.searchsorted(held.ids, start) : np.searchsorted(held.ids, stop)]
            for held in (self.settled, self.recent)
        ]
        return np.union1d(*parts)

    def install(self) -> SortedState:
        """Built whole aside: nothing left to do on the event loop."""
        return self

    def newer(self, files: list[UpdateFile]) -> SortedState:
        """This state with ``files`` (oldest first) laid over: they go to ``recent``, which
        is folded into ``settled`` once it outgrows ``max(RECENT_ROWS, settled / 8)``."""
        settled, recent = self.settled, self.recent
        for update in files:
            recent = recent.newer(update.ids, update.rows)
        if recent.ids.size > max(RECENT_ROWS, settled.ids.size // 8):
            settled = settled.newer(recent.ids, recent.rows)
            recent = RowSet.empty(recent.rows.shape[1])
        return SortedState(files[-1].sequence, settled, recent)
