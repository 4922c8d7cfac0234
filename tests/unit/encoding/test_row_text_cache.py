"""Cached-row JSON is byte-identical to orjson's own output; the cache stays bounded."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.encoding.responses import json_envelope, nest_texts, vectors_json
from service.encoding.row_text_cache import RowTextCache, rows_text

OPT = orjson.OPT_SERIALIZE_NUMPY


@pytest.mark.parametrize("shape", [(), (1,), (5,), (2, 3), (2, 2, 2), (0,), (3, 0)])
def test_joined_texts_equal_orjson(shape) -> None:
    table = (np.random.default_rng(0).standard_normal((50, 9)) * 10.0 ** np.arange(-4, 5)).astype(
        np.float32
    )
    table[0, :3] = [0.0, -0.0, 1e-38]
    ids = np.random.default_rng(1).integers(0, 50, size=shape)
    texts = dict(zip(range(50), rows_text(table), strict=True))
    flat = [texts[i] for i in ids.ravel().tolist()]
    vectors = table[ids]
    built = json_envelope("t", vectors.shape, "float32", nest_texts(flat, ids.shape))
    expected = orjson.dumps(
        {"table": "t", "shape": list(vectors.shape), "dtype": "float32", "vectors": vectors},
        option=OPT,
    )
    assert built == expected
    assert vectors_json(vectors) == orjson.dumps(vectors, option=OPT)


def test_cache_is_bounded_and_reports_misses() -> None:
    cache = RowTextCache(capacity_bytes=10_000)
    texts, missing = cache.lookup([1, 2, 3])
    assert texts == [None, None, None] and missing == [0, 1, 2]
    cache.store([1, 2, 3], [b"[1.0]", b"[2.0]", b"[3.0]"])
    texts, missing = cache.lookup([3, 1])
    assert texts == [b"[3.0]", b"[1.0]"] and missing == []
    cache.store(list(range(100, 1000)), [b"[0.0]"] * 900)
    assert cache.size_bytes <= 10_000 and len(cache) < 903


@pytest.mark.parametrize("shape", [(), (1,), (7,), (2, 3), (2, 2, 2), (0,), (3, 0)])
@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_plan_render_equals_orjson(shape: tuple[int, ...], flat: bool) -> None:
    """plan -> gather(fetch_ids) -> render is byte-identical to orjson, -1 giving zeros,
    on a cold cache and a warm one."""
    table = np.random.default_rng(2).standard_normal((40, 5)).astype(np.float32)
    ids = np.random.default_rng(3).integers(-1, 40, size=shape)
    expected_vectors = np.where((ids >= 0)[..., None], table[np.maximum(ids, 0)], 0).astype(
        np.float32
    )
    expected = orjson.dumps(expected_vectors.reshape(-1) if flat else expected_vectors, option=OPT)
    cache = RowTextCache(1 << 20)
    for _ in range(2):  # cold, then warm
        plan = cache.plan(ids.reshape(-1).astype(np.int64))
        assert (plan.fetch_ids >= 0).all()
        assert len(set(plan.fetch_ids.tolist())) == plan.fetch_ids.size
        assert cache.render(plan, table[plan.fetch_ids], (*ids.shape, 5), flat=flat) == expected
