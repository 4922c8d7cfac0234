"""Row texts: orjson's text of rows, cut per row and joined back to any shape, unchanged."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.caches.row_texts import inner_texts, join_rows, zero_text

OPT = orjson.OPT_SERIALIZE_NUMPY


@pytest.mark.parametrize("shape", [(), (1,), (5,), (2, 3), (2, 2, 2), (3, 1, 2)])
@pytest.mark.parametrize("flat", [False, True])
def test_joined_inner_texts_equal_orjson(shape, flat) -> None:
    table = np.random.default_rng(2).standard_normal((20, 3)).astype(np.float32)
    ids = np.random.default_rng(3).integers(0, 20, size=shape)
    texts = inner_texts(table)
    joined = join_rows([texts[i] for i in ids.ravel().tolist()], ids.shape, flat)
    vectors = table[ids]
    assert joined == orjson.dumps(vectors.reshape(-1) if flat else vectors, option=OPT)


def test_zero_text_is_orjsons_zero_row() -> None:
    for dim in (1, 3, 128):
        zero = np.zeros((2, dim), np.float32)
        assert join_rows([zero_text(dim)] * 2, (2,)) == orjson.dumps(zero, option=OPT)
