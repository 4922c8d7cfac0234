"""A bounded cache of the JSON text of table rows.

Tables are read-only, so the text orjson writes for a row never changes. Joining
cached texts is much cheaper than formatting every float again, and skewed
traffic (Zipf-like, as in recommenders and word vectors) keeps the hot rows in.
Eviction is FIFO by insertion (a dict keeps order), half the cache at a time:
O(1) per hit, no bookkeeping on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

import numpy as np
import orjson

from service.encoding.responses import nest_texts

# Per entry beyond the text: dict slot, int key, bytes object header.
_ENTRY_OVERHEAD = 120
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def rows_text(rows: np.ndarray) -> list[bytes]:
    """orjson's text of each row of a 2-D float array, as orjson writes it inside a list."""
    if rows.shape[0] == 0:
        return []
    whole = orjson.dumps(rows, option=_NUMPY)
    # Numbers never contain brackets, so "],[" separates rows exactly.
    inner = whole[2:-2].split(b"],[")
    return [b"[" + part + b"]" for part in inner]


@dataclass(slots=True)
class RowTextPlan:
    """What ``render`` needs: the cached texts, where they miss, and the ids to gather."""

    keys: list[int]
    texts: list[bytes | None]
    missing: list[int]
    fetch_ids: np.ndarray


_NO_IDS = np.zeros(0, dtype=np.int64)


def _inner_texts(rows: np.ndarray) -> list[bytes]:
    """orjson's text of each row of a 2-D float array without the row's brackets."""
    if rows.shape[0] == 0:
        return []
    # Numbers never contain brackets, so "],[" separates rows exactly.
    return orjson.dumps(rows, option=_NUMPY)[2:-2].split(b"],[")


@lru_cache(maxsize=64)
def _zero_inner(dim: int) -> bytes:
    return orjson.dumps(np.zeros(dim, dtype=np.float32), option=_NUMPY)[1:-1]


def _nest_inner(inner: list[bytes], shape: tuple[int, ...]) -> bytes:
    """JSON of ``shape`` (ids shape + (dim,)) from rows' bracket-less texts, one join per level."""
    if 0 in shape:
        return orjson.dumps(np.zeros(shape, dtype=np.float32), option=_NUMPY)
    if len(shape) == 1:
        return b"[" + inner[0] + b"]"
    if len(shape) == 2:  # 1-D ids, the common case
        return b"[[" + b"],[".join(inner) + b"]]"
    size = shape[-2]
    groups = [b"[[" + b"],[".join(inner[i : i + size]) + b"]]" for i in range(0, len(inner), size)]
    return nest_texts(groups, shape[:-2])


def _flat_inner(inner: list[bytes], shape: tuple[int, ...]) -> bytes:
    """One flat JSON list of every number (V2 ``data``)."""
    if 0 in shape:
        return b"[]"
    return b"[" + b",".join(inner) + b"]"


class RowTextCache:
    """Maps row id -> JSON text of that (final, float32) row, up to ``capacity_bytes``.

    ``plan``/``render`` keep each row's text without its brackets, so that nested (v1) and
    flat (V2 ``data``) bodies are each one join."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._texts: dict[int, bytes] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._texts)

    def lookup(self, ids: list[int]) -> tuple[list[bytes | None], list[int]]:
        """Texts for ``ids`` (``None`` where missing) and the positions that missed."""
        texts = list(map(self._texts.get, ids))
        if None not in texts:
            self.hits += len(ids)
            return texts, []
        missing = [i for i, text in enumerate(texts) if text is None]
        self.misses += len(missing)
        self.hits += len(ids) - len(missing)
        return texts, missing

    def store(self, ids: list[int], texts: list[bytes]) -> None:
        """Remember texts of rows just encoded, evicting the oldest half when full."""
        cache = self._texts
        for key, text in zip(ids, texts, strict=True):
            if key not in cache:
                cache[key] = text
                self._bytes += len(text) + _ENTRY_OVERHEAD
        while self._bytes > self.capacity_bytes and cache:
            self._evict_half()

    def _evict_half(self) -> None:
        cache = self._texts
        for key in list(islice(cache, max(1, len(cache) // 2))):
            self._bytes -= len(cache.pop(key)) + _ENTRY_OVERHEAD

    def plan(self, ids: np.ndarray) -> RowTextPlan:
        """Look ``ids`` up (1-D int64; -1 means a zero vector); the distinct misses to gather."""
        keys = ids.tolist()
        texts = list(map(self._texts.get, keys))
        if None not in texts:
            self.hits += len(keys)
            return RowTextPlan(keys, texts, [], _NO_IDS)
        missing = [i for i, text in enumerate(texts) if text is None]
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        fetch = np.unique(ids[missing])
        if fetch.size and fetch[0] < 0:  # sorted: a -1 (zero vector) comes first
            fetch = fetch[1:]
        return RowTextPlan(keys, texts, missing, fetch)

    def render(
        self, plan: RowTextPlan, fetched: np.ndarray, shape: tuple[int, ...], flat: bool = False
    ) -> bytes:
        """JSON text of the vectors nested to ``shape`` (or one flat list), byte-identical to
        orjson's; ``fetched`` holds the final float32 rows of ``plan.fetch_ids`` in order."""
        texts = plan.texts
        if plan.missing:
            fetch_keys = plan.fetch_ids.tolist()
            fetched_texts = _inner_texts(fetched)
            self.store(fetch_keys, fetched_texts)
            found: dict[int, bytes] = dict(zip(fetch_keys, fetched_texts, strict=True))
            keys = plan.keys
            for i in plan.missing:
                text = found.get(keys[i])
                texts[i] = text if text is not None else _zero_inner(shape[-1])
        done: list[bytes] = texts  # type: ignore[assignment]  # every miss is filled above
        return _flat_inner(done, shape) if flat else _nest_inner(done, shape)
