"""JSON text of table rows, exactly as orjson writes it, cut per row and joined back.

A row's *inner text* is its numbers without the brackets (``1.0,2.0``): what the row-text
cache keeps, and what :func:`join_rows` nests to any shape in one copy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import orjson

NUMPY = orjson.OPT_SERIALIZE_NUMPY


def inner_texts(rows: np.ndarray) -> list[bytes]:
    """orjson's text of each row of a 2-D float array without its brackets (``1.0,2.0``):
    one orjson call for all rows."""
    if rows.shape[0] == 0:
        return []
    # Numbers never contain brackets, so "],[" separates rows exactly.
    return orjson.dumps(rows, option=NUMPY)[2:-2].split(b"],[")


@lru_cache(maxsize=64)
def zero_text(dim: int) -> bytes:
    """The inner text of a float32 zero vector of ``dim`` numbers (written once per dim)."""
    return inner_texts(np.zeros((1, dim), np.float32))[0]


def join_rows(texts: list[bytes], ids_shape: tuple[int, ...], flat: bool = False) -> bytes:
    """The JSON of rows given as :func:`inner_texts`, nested to ``ids_shape`` (one list per
    row inside), or one flat list of all their numbers; byte-identical to orjson's.

    Consumes ``texts`` (its end items are rewritten): the brackets go onto the first and
    last rows, so the whole answer is copied once, by one ``bytes.join`` (as fast as
    orjson pasting Fragments; ``b"[" + joined + b"]"`` would copy it twice more)."""
    if not ids_shape and not flat:
        return b"[" + texts[0] + b"]"
    if flat:
        return _joined(texts, b"[", b",", b"]")
    if len(ids_shape) == 1:
        return _joined(texts, b"[[", b"],[", b"]]")
    width = ids_shape[-1]
    level = [
        _joined(texts[i : i + width], b"[[", b"],[", b"]]") for i in range(0, len(texts), width)
    ]
    for size in reversed(ids_shape[1:-1]):
        level = [_joined(level[i : i + size], b"[", b",", b"]") for i in range(0, len(level), size)]
    return _joined(level, b"[", b",", b"]")


def _joined(parts: list[bytes], head: bytes, separator: bytes, tail: bytes) -> bytes:
    """``head + separator.join(parts) + tail`` in one copy (``parts`` is rewritten)."""
    if len(parts) == 1:
        return head + parts[0] + tail
    parts[0] = head + parts[0]
    parts[-1] = parts[-1] + tail
    return separator.join(parts)
