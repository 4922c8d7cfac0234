"""A search over updated rows answers bit for bit what it answers once they are folded in."""

from __future__ import annotations

import numpy as np
import pytest

from service.semantics.neighbors import ArrayRows, ExactNeighborIndex


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
@pytest.mark.parametrize(("queries", "dim"), [(1, 24), (2, 8), (7, 64), (1, 128)])
def test_updated_rows_score_as_if_folded_into_the_table(
    metric: str, queries: int, dim: int
) -> None:
    rng = np.random.default_rng(2)
    table = rng.standard_normal((5000, dim)).astype(np.float32)
    asked = rng.standard_normal((queries, dim)).astype(np.float32)
    changed = np.array([3, 1500, 4999])  # near the first query: their scores are answered
    scale = np.array([[1.2], [1.1], [0.9]], np.float32)
    new_rows = (asked[:1] * scale + 0.01 * rng.standard_normal((3, dim))).astype(np.float32)
    folded = table.copy()
    folded[changed] = new_rows

    def updated(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        inside = (changed >= start) & (changed < stop)
        return changed[inside], new_rows[inside]

    index = ExactNeighborIndex(ArrayRows(table), block_rows=2048)
    got = index.search(asked, 10, metric, None, updated)
    expected = ExactNeighborIndex(ArrayRows(folded), block_rows=2048).search(asked, 10, metric)
    assert set(changed) & set(got[0][0].tolist())  # updated rows among the answered
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])  # not merely close
    plain = index.search(asked, 10, metric)  # the table's own rows, cached norms untouched
    np.testing.assert_array_equal(
        plain[1], ExactNeighborIndex(ArrayRows(table), 2048).search(asked, 10, metric)[1]
    )
