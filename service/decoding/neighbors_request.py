"""Nearest-neighbour requests: queries by ``ids`` or raw ``vectors``, ``k``, ``metric``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.decoding.body import choice, json_object
from service.decoding.ids import body_may_hold_booleans, ids_array
from service.errors import InvalidRequest, PayloadTooLarge
from service.semantics.neighbors import METRICS

FIELDS = frozenset(("ids", "keys", "vectors", "k", "metric", "exclude_self"))
MAX_K = 1000
MAX_QUERIES = 1024


@dataclass(frozen=True)
class NeighborsRequest:
    ids: np.ndarray | None  # 1-D query ids, or None when vectors are given
    vectors: np.ndarray | None  # (q, dim) float32
    keys: list[str] | None
    k: int = 10
    metric: str = "cosine"
    exclude_self: bool = True


def decode_neighbors(body: bytes) -> NeighborsRequest:
    fields = json_object(body, FIELDS, ())
    given = [name for name in ("ids", "keys", "vectors") if fields.get(name) is not None]
    if len(given) != 1:
        raise InvalidRequest("give exactly one of ids, keys or vectors")
    k = fields.get("k", 10)
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise InvalidRequest(f"k must be an integer from 1 to {MAX_K}")
    metric = choice(fields.get("metric"), "metric", METRICS, "cosine")
    exclude = fields.get("exclude_self", True)
    if type(exclude) is not bool:
        raise InvalidRequest("exclude_self must be true or false")
    ids = vectors = keys = None
    if given[0] == "ids":
        ids = ids_array(fields["ids"], check_booleans=body_may_hold_booleans(body)).reshape(-1)
        count = ids.size
    elif given[0] == "keys":
        raw = fields["keys"]
        raw = [raw] if type(raw) is str else raw
        if type(raw) is not list or any(type(key) is not str for key in raw):
            raise InvalidRequest("keys must be a key or a list of keys")
        keys, count = raw, len(raw)
    else:
        raw = fields["vectors"]
        if type(raw) is not list or not raw:
            raise InvalidRequest("vectors must be a non-empty list of vectors")
        if type(raw[0]) is not list:
            raw = [raw]
        if any(
            type(v) not in (int, float)
            for row in raw
            for v in (row if type(row) is list else [None])
        ):
            raise InvalidRequest("vectors must be lists of numbers")
        try:
            vectors = np.array(raw, dtype=np.float64)
        except ValueError:
            raise InvalidRequest("vectors must all have the same length") from None
        if vectors.ndim != 2 or not np.isfinite(vectors).all():
            raise InvalidRequest("vectors must be finite numbers, one list per query")
        with np.errstate(over="ignore"):
            vectors = vectors.astype(np.float32)
        if not np.isfinite(vectors).all():
            raise InvalidRequest("vectors must lie within float32's range")
        count = vectors.shape[0]
    if count > MAX_QUERIES:
        raise PayloadTooLarge(f"{count} queries in one request; the limit is {MAX_QUERIES}")
    if count == 0:
        raise InvalidRequest("no query given")
    return NeighborsRequest(ids, vectors, keys, k, metric, exclude)
