"""JSON envelopes around vectors are byte-identical to orjson's own output, whether the
vectors come from an array or from the row-text cache."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.caches.row_text_cache import RowTextCache
from service.encoding.responses import json_envelope, vectors_json

OPT = orjson.OPT_SERIALIZE_NUMPY


@pytest.mark.parametrize("shape", [(), (1,), (5,), (2, 3), (2, 2, 2), (0,), (3, 0)])
def test_envelope_of_cached_texts_equals_orjson(shape) -> None:
    table = (np.random.default_rng(0).standard_normal((50, 9)) * 10.0 ** np.arange(-4, 5)).astype(
        np.float32
    )
    table[0, :3] = [0.0, -0.0, 1e-38]
    ids = np.random.default_rng(1).integers(0, 50, size=shape)
    vectors = table[ids]
    expected = orjson.dumps(
        {"table": "t", "shape": list(vectors.shape), "dtype": "float32", "vectors": vectors},
        option=OPT,
    )
    cache = RowTextCache(1 << 20, doorkeeper=False)  # admits on first sight: then all hits
    for _ in range(2):
        plan = cache.plan(ids)
        text = cache.render(plan, table[plan.fetch_ids], vectors.shape)
        assert json_envelope("t", vectors.shape, "float32", text) == expected
    assert vectors_json(vectors) == orjson.dumps(vectors, option=OPT)
