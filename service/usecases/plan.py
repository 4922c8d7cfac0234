"""A vector use case's answer, planned: validated and laid out, its rows not yet gathered.

Every vector use case (lookup, sequences, bags, V2 infer) checks its request and lays out
its answer first, synchronously, and returns a ``Plan``; the rows are gathered when the plan
is run, one of two ways:

- ``run_inline()``: a plain call, for a table that gathers in the caller's stack (numpy,
  batching off: ``batcher.inline``). Nothing in it can wait on the event loop: it calls
  ``batcher.gather_inline`` and raises ``NotInline`` (before any work) where an answer must
  not be computed in one go (a table that queues, an answer rendered in slices).
- ``await run()``: from a task, for any table; the only awaits are the gathers (and the
  loop turns between the slices of a large rendered answer).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Generic, TypeVar

import numpy as np

from service.results import Timing
from service.semantics.max_norm import renormalise
from service.tables.served_table import ServedTable
from service.updates.overlay import OverlayState, apply_state

R = TypeVar("R", covariant=True)
S = TypeVar("S")
T = TypeVar("T")


class NotInline(Exception):
    """The plan cannot be run inline: its table queues, or its answer is rendered in slices
    with the event loop free between them. Raised before any rows are gathered."""


class Plan(Generic[R]):
    """An answer to compute: inline (no event loop) or awaited."""

    def run_inline(self) -> R:
        """The answer now, in the caller's stack; ``NotInline`` if it must be awaited."""
        raise NotImplementedError

    async def run(self) -> R:
        """The answer, awaiting the gathers."""
        raise NotImplementedError

    def then(self, finish: Callable[[R], S]) -> Plan[S]:
        """This plan's answer passed through ``finish`` (synchronous)."""
        return _Then(self, finish)


class Ready(Plan[R]):
    """An answer that needs no rows."""

    def __init__(self, value: R) -> None:
        self.value = value

    def run_inline(self) -> R:
        return self.value

    async def run(self) -> R:
        return self.value


class _Then(Plan[S], Generic[T, S]):
    def __init__(self, first: Plan[T], finish: Callable[[T], S]) -> None:
        self.first = first
        self.finish = finish

    def run_inline(self) -> S:
        return self.finish(self.first.run_inline())

    async def run(self) -> S:
        return self.finish(await self.first.run())


class Current(Enum):
    """``FinalRows``' default overlay: the state the table's updates hold now (``None``, given
    explicitly, is the state of a table before its first update: nothing to patch)."""

    STATE = 0


class FinalRows(Plan[np.ndarray]):
    """Final rows of 1-D ``ids``: gathered, patched with the table's row updates, renormalised
    when configured, in ``dtype``.

    The updates are those the table's overlay held when the plan was made (``overlay``: the
    state to use, else the current one): one state for the whole gather, so an answer holds
    all of an update or none of it, and the row-text cache's plan made in the same step of
    the event loop agrees with it.
    """

    def __init__(
        self,
        table: ServedTable,
        ids: np.ndarray,
        dtype: str,
        timing: Timing,
        overlay: OverlayState | Current | None = Current.STATE,
    ) -> None:
        self.table = table
        self.ids = ids
        self.dtype = dtype
        self.timing = timing
        if overlay is Current.STATE:
            updates = table.updates
            overlay = None if updates is None else updates.state
        self.overlay = overlay

    def run_inline(self) -> np.ndarray:
        batcher = self.table.batcher
        if not batcher.inline:
            raise NotInline(f"table {self.table.name!r} does not gather inline")
        result = batcher.gather_inline(self.ids)
        return self._final(result.rows, result.queue_seconds, result.backend_seconds)

    async def run(self) -> np.ndarray:
        batcher = self.table.batcher
        ids = self.ids
        result = batcher.gather_inline(ids) if batcher.inline else await batcher.gather(ids)
        return self._final(result.rows, result.queue_seconds, result.backend_seconds)

    def _final(self, rows: np.ndarray, queued: float, gathering: float) -> np.ndarray:
        timing = self.timing
        timing.queue_seconds += queued
        timing.backend_seconds += gathering
        if self.overlay is not None:  # the table was updated: patch before max_norm
            # Our own rows (a fresh gather, or our slice of the batch result), else a copy.
            flags = rows.flags
            if rows.dtype != np.float32 or not (flags.writeable and flags.c_contiguous):
                rows = np.array(rows, np.float32, order="C")
            apply_state(self.overlay, self.ids, rows)
        options = self.table.options
        if options.max_norm is not None:
            # Our own slice of the batch result (or a fresh cast): safe to rescale in place.
            rows = rows.astype(
                np.float32, copy=rows.dtype != np.float32 or not rows.flags.writeable
            )
            renormalise(rows, options.max_norm, options.norm_type)
        if self.dtype == "float16":
            return rows.astype(np.float16)
        return rows.astype(np.float32, copy=False)
