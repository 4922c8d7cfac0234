"""Exact nearest-neighbour search over a table: blocked matrix products, bounded memory.

Scores: cosine similarity, dot product, or negative squared L2 distance; best first, ties
broken by the lower id. Each block of rows is scored against all queries at once; per block
only the candidates that can still make a query's top k (all ties at the k-th score kept) go
on to the final merge, so results equal a full sort of all scores. For cosine, the inverse row
norms are computed once and cached (4 bytes per row, not a normalised copy of the table).
Rows replaced by row updates (``updated``) are scored in place of the table's, per block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

METRICS = ("cosine", "dot", "l2")
# Scores held per block: queries x block rows x 4 bytes stays under ~64 MiB.
SCORE_BUDGET = 16 * 1024 * 1024


def _top(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` by (score desc, id asc)."""
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


# (start, stop) -> the ids in [start, stop) whose rows were replaced, and those rows.
UpdatedRows = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


class RowSource(Protocol):
    """Float32 rows by block (``TableWeights`` is one: it dequantises int8 tables)."""

    @property
    def rows(self) -> int: ...

    def block(self, start: int, stop: int) -> np.ndarray: ...


class ArrayRows:
    """A plain 2-D array as a ``RowSource``."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def rows(self) -> int:
        return int(self.array.shape[0])

    def block(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop], dtype=np.float32)


class ExactNeighborIndex:
    """Brute-force exact search over ``table`` (read-only rows, memory-mapped or not)."""

    def __init__(self, table: RowSource, block_rows: int = 65536) -> None:
        self.table = table
        self.block_rows = block_rows
        self.rows = table.rows
        self._norms: np.ndarray | None = None
        self._lock = threading.Lock()

    def row_norms(self) -> np.ndarray:
        """L2 norm of every row (float64 accumulation), computed once."""
        with self._lock:
            if self._norms is None:
                norms = np.empty(self.rows, dtype=np.float32)
                for start in range(0, self.rows, self.block_rows):
                    block = self.table.block(start, start + self.block_rows).astype(np.float64)
                    norms[start : start + block.shape[0]] = np.sqrt(
                        np.einsum("ij,ij->i", block, block)
                    )
                self._norms = norms
            return self._norms

    def search(
        self,
        queries: np.ndarray,
        k: int,
        metric: str,
        exclude: np.ndarray | None = None,
        updated: UpdatedRows | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)`` of shape ``(len(queries), k')`` with ``k' = min(k, eligible rows)``.

        ``updated``: rows that replace the table's (row updates), by block. Raises
        ``FloatingPointError`` when queries or scores leave float32's range.
        """
        rows = self.rows
        queries = np.asarray(queries, dtype=np.float32)
        if not np.isfinite(queries).all():
            raise FloatingPointError("query values beyond float32")
        n = queries.shape[0]
        norms = self.row_norms() if metric != "dot" else None
        if metric == "cosine":
            qnorms = np.linalg.norm(queries.astype(np.float64), axis=1)
            queries = (queries / np.where(qnorms == 0, 1, qnorms)[:, None]).astype(np.float32)
        score = _Scorer(queries, metric)
        block = max(1024, min(self.block_rows, SCORE_BUDGET // max(n, 1)))
        best_ids = [np.zeros(0, np.int64) for _ in range(n)]
        best_scores = [np.zeros(0, np.float32) for _ in range(n)]
        for start in range(0, rows, block):
            chunk = self.table.block(start, start + block)
            stop = start + chunk.shape[0]
            chunk_norms = None if norms is None else norms[start:stop]
            if updated is not None:
                chunk, chunk_norms = _with_updates(chunk, chunk_norms, *updated(start, stop), start)
            scores = score(chunk, chunk_norms)
            if not np.isfinite(scores).all():
                raise FloatingPointError("scores overflow float32")
            if exclude is not None:
                local = exclude - start
                hit = (local >= 0) & (local < chunk.shape[0])
                scores[np.flatnonzero(hit), local[hit]] = -np.inf
            kk = min(k, chunk.shape[0])
            kth = -np.partition(-scores, kk - 1, axis=1)[:, kk - 1]
            for i in range(n):
                cand = np.flatnonzero(scores[i] >= kth[i])  # all ties at the k-th score kept
                ids = np.concatenate((best_ids[i], cand + start))
                sc = np.concatenate((best_scores[i], scores[i, cand]))
                best_ids[i], best_scores[i] = _top(ids, sc, k)
        width = min(k, rows - (1 if exclude is not None else 0))
        out_ids = (
            np.stack([ids[:width] for ids in best_ids]) if n else np.zeros((0, width), np.int64)
        )
        out_scores = (
            np.stack([s[:width] for s in best_scores]) if n else np.zeros((0, width), np.float32)
        )
        return out_ids, out_scores


def _with_updates(
    chunk: np.ndarray, norms: np.ndarray | None, ids: np.ndarray, rows: np.ndarray, start: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The block (and its norms) with updated ``rows`` of ``ids`` in place of the table's: a
    copy scored by one product, so scores are bit for bit those of the same rows folded into
    the table (a separate product for the updated rows would round differently)."""
    if ids.size == 0:
        return chunk, norms
    local = ids - start
    chunk = np.array(chunk, np.float32, order="C")
    chunk[local] = rows
    if norms is not None:
        norms = norms.copy()
        norms[local] = _norms(rows)
    return chunk, norms


def _norms(rows: np.ndarray) -> np.ndarray:
    """L2 norm of each row (float64 accumulation), float32."""
    wide = rows.astype(np.float64)
    norms: np.ndarray = np.sqrt(np.einsum("ij,ij->i", wide, wide)).astype(np.float32)
    return norms


class _Scorer:
    """Scores of rows (with their norms) against one search's queries."""

    def __init__(self, queries: np.ndarray, metric: str) -> None:
        self.queries = queries  # unit length for cosine
        self.metric = metric
        self.q_sq = np.einsum("ij,ij->i", queries, queries) if metric == "l2" else None

    def __call__(self, rows: np.ndarray, norms: np.ndarray | None) -> np.ndarray:
        scores: np.ndarray = self.queries @ rows.T
        if self.metric == "cosine":
            assert norms is not None  # every metric but dot has them
            scores *= np.where(norms == 0, 0, 1 / np.where(norms == 0, 1, norms)).astype(np.float32)
        elif self.metric == "l2":
            assert norms is not None and self.q_sq is not None
            sq = norms.astype(np.float32) ** 2
            scores = -(self.q_sq[:, None] - 2 * scores + sq[None, :])
        return scores
