"""Sequence layout and max_norm on small hand-checked cases (reference tests compare to keras/torch)."""

from __future__ import annotations

import numpy as np

from service.semantics.max_norm import renormalise
from service.semantics.sequence_layout import sequence_layout


def grid(lengths, max_length, padding, truncating) -> list[list[int]]:
    """Input flat positions placed on the (B, L) grid, -1 where padded."""
    layout = sequence_layout(np.array(lengths, dtype=np.int64), max_length, padding, truncating)
    out = np.full(layout.batch * layout.length, -1)
    out[layout.slots] = layout.kept
    return out.reshape(layout.batch, layout.length).tolist()


def test_layouts() -> None:
    # input flat positions: seq0 = 0,1,2 ; seq1 = 3 ; seq2 = (empty)
    assert grid([3, 1, 0], None, "post", "post") == [[0, 1, 2], [3, -1, -1], [-1, -1, -1]]
    assert grid([3, 1, 0], None, "pre", "post") == [[0, 1, 2], [-1, -1, 3], [-1, -1, -1]]
    assert grid([3, 1, 0], 2, "post", "post") == [[0, 1], [3, -1], [-1, -1]]
    assert grid([3, 1, 0], 2, "post", "pre") == [[1, 2], [3, -1], [-1, -1]]
    assert grid([3, 1, 0], 2, "pre", "pre") == [[1, 2], [-1, 3], [-1, -1]]
    assert grid([3, 1], 0, "post", "post") == [[], []]
    assert grid([], None, "post", "post") == []


def test_renormalise_only_rows_over_the_limit() -> None:
    rows = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float32)
    renormalise(rows, 1.0, 2.0)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), [1.0, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(rows[1], np.array([0.3, 0.4], dtype=np.float32))
