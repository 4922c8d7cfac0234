"""Shapes, lengths and sizes checked as Python integers before numpy sees them.

numpy computes products and sums in int64, which wraps around without a word
(``2**62 * 4`` is 0), and refuses dimensions beyond its limits with errors that
would surface as 500s. Every number that sizes an allocation is therefore
parsed and bounded here first: no negative dimension, at most ``MAX_RANK``
dimensions, each dimension at most the request's ids limit, and products
compared with the ids limit and the output cap in exact integer arithmetic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from service.errors import InvalidBody, InvalidRequest, PayloadTooLarge

# numpy 2 allows 64 dimensions; ids need far fewer, and the output adds one.
MAX_RANK = 32
_DECIMAL = re.compile(r"^[ \t]*[0-9]+[ \t]*$")  # int() would also take "+3", "3_000", "٣"


def header_integers(text: str, name: str) -> list[int]:
    """Comma-separated non-negative decimal integers of a header (empty parts skipped).

    Only ASCII digits are accepted, so a huge value stays an exact Python int.
    """
    parts = [part for part in text.split(",") if part.strip()]
    if any(len(part) > 64 or not _DECIMAL.match(part) for part in parts):
        raise InvalidBody(f"{name} must be comma-separated non-negative integers", {"header": name})
    return [int(part) for part in parts]


def check_dims(dims: Sequence[int], what: str, max_dim: int) -> int:
    """Validate a shape of non-negative ints (rank and per-dimension cap); its exact product."""
    if len(dims) > MAX_RANK:
        raise InvalidRequest(
            f"{what} has {len(dims)} dimensions; at most {MAX_RANK} are allowed",
            {"rank": len(dims), "max_rank": MAX_RANK},
        )
    _check_each(dims, what, max_dim, InvalidRequest)
    return math.prod(dims)


def _check_each(
    values: Sequence[int], what: str, limit: int, negative: type[InvalidRequest | InvalidBody]
) -> None:
    """Each value a non-negative int (else ``negative``) no larger than ``limit`` (else 413)."""
    for index, value in enumerate(values):
        if type(value) is not int or value < 0:
            raise negative(
                f"{what} must hold non-negative integers", {"index": index, "value": value}
            )
        if value > limit:
            raise PayloadTooLarge(
                f"{what}[{index}] is {value}; the limit is {limit}",
                {"index": index, "value": value, "limit": limit},
            )


def check_id_count(count: int, max_ids: int) -> None:
    """413 when a request holds more ids than the limit (``count`` is an exact int)."""
    if count > max_ids:
        raise PayloadTooLarge(
            f"{count} ids in one request; the limit is {max_ids}",
            {"ids": count, "max_ids": max_ids},
        )


def check_lengths(lengths: Sequence[int], what: str, max_ids: int) -> int:
    """Per-sequence lengths: each non-negative and at most ``max_ids``; their exact sum."""
    check_batch(len(lengths), what, max_ids)
    _check_each(lengths, what, max_ids, InvalidBody)
    total = sum(lengths)
    check_id_count(total, max_ids)
    return total


def check_batch(batch: int, what: str, max_ids: int) -> None:
    """At most ``max_ids`` sequences (or bags) in one request, even empty ones."""
    if batch > max_ids:
        raise PayloadTooLarge(
            f"{what} holds {batch} sequences or bags; the limit is {max_ids}",
            {"batch": batch, "max_ids": max_ids},
        )


def check_max_length(value: Any, max_ids: int) -> int | None:
    """``max_length``: ``None`` or a non-negative int no larger than the ids limit."""
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise InvalidRequest(
            "max_length must be a non-negative integer or null", {"field": "max_length"}
        )
    if value > max_ids:
        raise PayloadTooLarge(
            f"max_length {value} is over the limit of {max_ids} positions",
            {"max_length": value, "max_ids": max_ids},
        )
    return value


def check_output_bytes(elements: int, dim: int, itemsize: int, limit: int) -> None:
    """413 when ``elements x dim x itemsize`` bytes of vectors exceed ``limit`` (exact ints)."""
    size = int(elements) * int(dim) * int(itemsize)
    if size > limit:
        raise PayloadTooLarge(
            f"the response would hold {size} bytes of vectors; the limit is {limit}",
            {"bytes": size, "max_output_bytes": limit},
        )
