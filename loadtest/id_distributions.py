"""Request id streams for the benchmarks: how often rows recur is the distribution's, not ours.

``uniform`` over the whole table, ``zipf<alpha>`` (bounded Zipf over all rows: rank ``k`` drawn
with probability proportional to ``k**-alpha``, ranks scattered over the table by a fixed
permutation) and ``repeated`` (a small set of request bodies sent in rotation, the old bench).
"""

from __future__ import annotations

import numpy as np

DISTRIBUTIONS = ("repeated", "uniform", "zipf0.9", "zipf1.1", "zipf1.3")
REPEATED_BODIES = 64


class IdSampler:
    """Draws request id arrays of one distribution over a table of ``rows`` rows."""

    def __init__(self, distribution: str, rows: int, seed: int = 0) -> None:
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {distribution!r}; one of {DISTRIBUTIONS}")
        self.distribution = distribution
        self.rows = rows
        self._rng = np.random.default_rng(seed)
        self._cdf: np.ndarray | None = None
        self._ids_of_rank: np.ndarray | None = None
        if distribution.startswith("zipf"):
            alpha = float(distribution[4:])
            weights = np.arange(1, rows + 1, dtype=np.float64) ** -alpha
            self._cdf = np.cumsum(weights / weights.sum())
            self._ids_of_rank = np.random.default_rng(seed + 1).permutation(rows)
        self._repeated: list[np.ndarray] = []
        self._turn = 0

    def draw(self, size: int) -> np.ndarray:
        """One request's ids (int64)."""
        if self.distribution == "uniform":
            return self._rng.integers(0, self.rows, size=size, dtype=np.int64)
        if self.distribution == "repeated":
            if len(self._repeated) < REPEATED_BODIES:
                body = self._rng.integers(0, self.rows, size=size, dtype=np.int64)
                self._repeated.append(body)
                return body
            self._turn = (self._turn + 1) % REPEATED_BODIES
            return self._repeated[self._turn]
        assert self._cdf is not None and self._ids_of_rank is not None
        ranks = np.searchsorted(self._cdf, self._rng.random(size), side="right")
        return self._ids_of_rank[np.minimum(ranks, self.rows - 1)].astype(np.int64)
