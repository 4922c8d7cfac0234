"""Turns decoded JSON into an int64 id array, refusing everything that is not an integer.

All checks are whole-array numpy operations. Two traps are handled on purpose:
numpy turns ``[1, true]`` into ``[1, 1]`` without a word, and orjson reads
integers beyond 64 bits as floats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from service.errors import IdOutOfRange, InvalidIds

INT64_LIMIT = 2.0**63

Position = Callable[[int], list[int]]


def body_may_hold_booleans(body: bytes) -> bool:
    """Cheap pre-check: only a body with a ``true``/``false`` token can hold a boolean (both
    hold an ``e``: one byte scan, ~10x faster than the two word searches, settles most)."""
    return b"e" in body and (b"true" in body or b"false" in body)


def _first_boolean(value: Any, path: list[int]) -> list[int] | None:
    """Position of the first boolean in nested lists, or ``None`` (runs only when needed)."""
    stack: list[tuple[Any, list[int]]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if item is True or item is False:
            return where
        if type(item) is list:
            stack.extend((child, [*where, i]) for i, child in reversed(list(enumerate(item))))
    return None


def _holds_boolean(value: Any) -> bool:
    """Whether ``value`` (an int or nested lists) holds a boolean: one C-level pass over the
    types of each list (~20 ns an item) where :func:`_first_boolean` walks item by item."""
    if type(value) is not list:
        return value is True or value is False
    types = set(map(type, value))
    if bool in types:
        return True
    return list in types and any(_holds_boolean(item) for item in value if type(item) is list)


def ids_array(value: Any, *, check_booleans: bool, what: str = "ids") -> np.ndarray:
    """``value`` (an int or rectangular nested lists of ints) as an int64 array of its shape."""
    if check_booleans and _holds_boolean(value):
        where = _first_boolean(value, [])
        if where is not None:
            raise InvalidIds(
                f"{what} must be integers; booleans are not ids",
                {"position": where, "value": value_at(value, where)},
            )
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _not_an_array(value, what, exc) from None
    if array.dtype == np.int64:  # the common case (ids within int64), with no more calls
        return array
    return as_int64_ids(array, what)


# Ragged ids have a route of their own: what a lookup answers when its ids are ragged.
RAGGED_IDS_HINT = (
    'for id lists of different lengths, send them as "sequences" to '
    "/v1/tables/{table}/sequences (padded vectors, a mask and the lengths)"
)


def _not_an_array(value: Any, what: str, error: Exception) -> InvalidIds:
    """The error for ``value`` numpy cannot make an array of: where it is ragged, if it is."""
    ragged = _first_ragged(value)
    if ragged is None:
        return InvalidIds(
            f"{what} must be an integer or rectangular nested lists of integers",
            {"reason": str(error).split(".")[0]},
        )
    (where, size), (first, first_size) = ragged
    message = (
        f"{what} must be rectangular nested lists of integers: {_item(what, where, size)}, "
        f"{_item(what, first, first_size)}"
    )
    if what == "ids":
        message += f"; {RAGGED_IDS_HINT}"
    return InvalidIds(message, {"position": where, "length": size, "expected": first_size})


def _item(what: str, where: list[int], size: int | None) -> str:
    name = what + "".join(f"[{i}]" for i in where)
    if size is None:
        return f"{name} is a number"
    return f"{name} has {size} item{'' if size == 1 else 's'}"


Sized = tuple[list[int], int | None]  # a position, and its list's length (None: not a list)


def _first_ragged(value: Any) -> tuple[Sized, Sized] | None:
    """The first item (breadth first) whose length differs from the first at its depth, and
    that first one: rectangular nested lists have one length per depth."""
    level: list[tuple[list[int], Any]] = [([], value)]
    while level:
        first = (level[0][0], _length(level[0][1]))
        below: list[tuple[list[int], Any]] = []
        for where, item in level:
            size = _length(item)
            if size != first[1]:
                return (where, size), first
            if size:
                below.extend(([*where, i], child) for i, child in enumerate(item))
        level = below
    return None


def _length(item: Any) -> int | None:
    return len(item) if type(item) is list else None


def as_int64_ids(array: np.ndarray, what: str = "ids") -> np.ndarray:
    """Checks the dtype numpy inferred and returns int64 ids, naming the first bad element."""
    kind = array.dtype.kind
    if kind == "i":
        return array.astype(np.int64, copy=False)
    if array.size == 0:
        # [] and [[]] infer float64; an empty request is still a valid (empty) lookup.
        return np.zeros(array.shape, dtype=np.int64)
    if kind == "u":
        huge = np.argmax(array >= np.uint64(2**63))
        raise IdOutOfRange(
            f"{what} beyond int64 are out of range",
            {"id": int(array.flat[huge]), "position": _pos(array, int(huge))},
        )
    if kind == "f":
        finite_integral = np.isfinite(array) & (np.floor(array) == array)
        huge = finite_integral & (np.abs(array) >= INT64_LIMIT)
        if huge.any():
            # orjson reads integers beyond 64 bits as floats: report them as ids out of
            # range (they are), not as a float the client never sent.
            at = int(np.argmax(huge))
            return _raise_out_of_range_float(array, at, what)
        at = int(np.argmax(~finite_integral)) if not finite_integral.all() else 0
        raise InvalidIds(
            f"{what} must be integers, got a number with a fraction or exponent",
            {"position": _pos(array, at), "value": float(array.flat[at])},
        )
    if kind == "b":
        raise InvalidIds(
            f"{what} must be integers; booleans are not ids", {"position": _pos(array, 0)}
        )
    if kind == "O":
        at = _first_non_int_object(array)
        value = array.flat[at]
        if type(value) is int:
            raise IdOutOfRange(
                f"{what} beyond int64 are out of range",
                {"id": str(value), "position": _pos(array, at)},
            )
        raise InvalidIds(
            f"{what} must be integers; found {_describe(array.flat[at])}",
            {"position": _pos(array, at)},
        )
    raise InvalidIds(f"{what} must be integers; found strings", {"position": _pos(array, 0)})


def _raise_out_of_range_float(array: np.ndarray, at: int, what: str) -> np.ndarray:
    value = array.flat[at]
    raise IdOutOfRange(
        f"{what} beyond int64 are out of range",
        {"id": str(int(value)), "position": _pos(array, at)},
    )


def _first_non_int_object(array: np.ndarray) -> int:
    flat = array.ravel()
    ok = np.frompyfunc(lambda v: type(v) is int and -(2**63) <= v < 2**63, 1, 1)(flat).astype(bool)
    return int(np.argmax(~ok)) if not ok.all() else 0


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, int) and not isinstance(value, bool):
        return "an integer beyond int64"
    return type(value).__name__


def _pos(array: np.ndarray, flat_index: int) -> list[int]:
    return [int(i) for i in np.unravel_index(flat_index, array.shape)] if array.ndim else []


def value_at(value: Any, where: list[int]) -> Any:
    """The element of nested lists at ``where``."""
    for i in where:
        value = value[i]
    return value


def segment_position(lengths: np.ndarray, flat_index: int) -> list[int]:
    """``[segment, offset]`` of the element at ``flat_index`` of ragged lists of ``lengths``."""
    ends = np.cumsum(lengths)
    segment = int(np.searchsorted(ends, flat_index, side="right"))
    return [segment, flat_index - (int(ends[segment - 1]) if segment else 0)]


def check_in_range(ids: np.ndarray, rows: int, position: Position | None = None) -> None:
    """Raise ``IdOutOfRange`` naming the first id ``< 0`` or ``>= rows`` and its position.

    Negative ids are errors, never numpy-style indexing from the end.
    """
    size = ids.size
    if size == 0:
        return
    if size <= 64:
        # Two numpy reductions cost ~3 us on a handful of ids; Python's min/max far less.
        values = ids.ravel().tolist()
        if min(values) >= 0 and max(values) < rows:
            return
    elif int(ids.min()) >= 0 and int(ids.max()) < rows:
        return
    flat = ids.ravel()
    at = int(np.argmax((flat < 0) | (flat >= rows)))
    where = position(at) if position is not None else _pos(ids, at)
    raise IdOutOfRange(
        f"id {int(flat[at])} is out of range for a table of {rows} rows",
        {"id": int(flat[at]), "position": where, "rows": rows},
    )


def keys_array(value: Any, what: str = "keys") -> tuple[list[str], tuple[int, ...]]:
    """Flat keys and their shape, from a key or rectangular nested lists of keys (strings)."""
    if type(value) is str:
        return [value], ()
    try:
        array = np.array(value, dtype=object)
    except ValueError:
        raise InvalidIds(f"{what} must be strings in rectangular nested lists") from None
    flat = array.reshape(-1).tolist()
    if any(type(key) is not str for key in flat):
        raise InvalidIds(f"{what} must be strings in rectangular nested lists")
    return flat, array.shape


def ragged_keys(value: Any, what: str) -> tuple[list[str], np.ndarray]:
    """Flat keys and per-list lengths from a list of lists of strings."""
    if type(value) is not list or any(type(item) is not list for item in value):
        raise InvalidIds(f"{what} must be a list of lists of keys")
    lengths = np.fromiter((len(item) for item in value), dtype=np.int64, count=len(value))
    flat = [key for item in value for key in item]
    if any(type(key) is not str for key in flat):
        raise InvalidIds(f"{what} must hold strings")
    return flat, lengths
