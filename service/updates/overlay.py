"""The updated rows of one file-table version, held in memory and patched into gathered rows.

Every process serving the version keeps one ``UpdateOverlay``. ``refresh()`` reads the update
files written since it last looked (``catch_up``), builds the next state aside and swaps one
reference: a gather that read the state before the swap applies none of a new update's rows,
one that read it after applies all of them -- a response never holds part of an update.

Two kinds of state, both built aside (off the event loop) and installed in one step:

- tables up to ``DENSE_MAX_ROWS`` rows: ``row_versions.DenseState``, a dense index over every
  version of the rows updated: a lookup of ``k`` ids costs one gather of ``k`` positions,
  whatever the number of rows held; a refresh costs ``O(rows it brings)``;
- larger tables: ``sorted_rows.SortedState``, sorted ids searched, ``O(k log n)`` for ``n``
  rows held, with no per-table-row memory.

``refresh`` runs in one task at a time. With no update at all the state is ``None``:
``apply`` costs one attribute check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.updates.catch_up import files_after
from service.updates.delta_files import UpdateFile
from service.updates.row_versions import DenseRefresh, DenseState, prepare_refresh
from service.updates.sorted_rows import SortedState, newest_rows

# A dense index costs an int32 per table row (64 MiB at most per process and version): tables
# up to this size get one (``row_versions``), larger ones are searched (``sorted_rows``).
DENSE_MAX_ROWS = 16 << 20
_NO_IDS = np.empty(0, np.int64)

# What a refresh saw, every update up to ``state.sequence``: ``DenseState`` or ``SortedState``
# (both immutable for their readers; ``patch(ids, rows)``, ``rows``: distinct ids held).
OverlayState = DenseState | SortedState


def apply_state(state: OverlayState | None, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Patch float32 ``rows`` (gathered for ``ids``, C-contiguous) with ``state``'s rows; the
    places (in the flattened ``ids``) overwritten."""
    if state is None or ids.size == 0:
        return _NO_IDS
    flat_ids = ids.reshape(-1)
    return state.patch(flat_ids, rows.reshape(flat_ids.size, -1))  # a view: rows contiguous


def rows_updated_between(
    state: OverlayState, start: int, stop: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ids in ``[start, stop)`` that ``state`` updated and their float32 rows (a scan of
    the table by blocks, as a neighbour search makes, sees the updated rows this way)."""
    ids = state.updated_between(start, stop)
    rows = np.empty((ids.size, dim), np.float32)
    held = state.patch(ids, rows, off_loop=True)  # a search thread
    return ids.take(held), rows.take(held, axis=0)


@dataclass(frozen=True)
class PendingState:
    """A state built aside from the overlay at sequence ``after``, and the files it read."""

    after: int
    state: DenseRefresh | SortedState  # ``install()`` gives the state
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
        self.state = pending.state.install()  # the one swap
        self._sequence = self.state.sequence
        return np.unique(np.concatenate([f.ids for f in pending.files]))

    def _next_state(self, files: list[UpdateFile]) -> DenseRefresh | SortedState:
        current = self.state
        if self.table_rows is None or self.table_rows > DENSE_MAX_ROWS:
            base = current if isinstance(current, SortedState) else SortedState.empty(self.dim)
            return base.newer(files)
        ids, rows = newest_rows([f.ids for f in files], [f.rows for f in files])
        dense = current if isinstance(current, DenseState) else None
        sequence = files[-1].sequence
        return prepare_refresh(dense, self.table_rows, ids, rows.astype(np.float32), sequence)
