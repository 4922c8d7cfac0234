"""Decoders of the lookup and sequences routes: bytes and headers in, typed requests out."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypedDict

import numpy as np

from service.decoding.body import OCTET_STREAM, choice, json_object
from service.decoding.ids import (
    as_int64_ids,
    body_may_hold_booleans,
    ids_array,
    keys_array,
    ragged_keys,
    segment_position,
)
from service.decoding.shapes import (
    check_batch,
    check_dims,
    check_id_count,
    check_lengths,
    check_max_length,
    header_integers,
)
from service.errors import IdOutOfRange, InvalidBody, InvalidIds, InvalidRequest

ENCODINGS = ("float", "base64")
OUTPUT_DTYPES = ("float32", "float16")
SIDES = ("post", "pre")
_BINARY_ID_DTYPES: dict[str, np.dtype[Any]] = {"int64": np.dtype("<i8"), "int32": np.dtype("<i4")}

LOOKUP_FIELDS = frozenset(("ids", "keys", "encoding", "dtype"))
SEQUENCES_FIELDS = frozenset(
    ("sequences", "keys", "max_length", "padding", "truncating", "encoding", "dtype")
)


@dataclass(frozen=True)
class LookupRequest:
    """Ids of any rank (validated as integers, not yet against a table)."""

    ids: np.ndarray | None
    encoding: str = "float"
    dtype: str = "float32"
    keys: list[str] | None = None  # in place of ids, for tables with a vocabulary
    key_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class SequencesRequest:
    """Ragged sequences as flat ids plus per-sequence lengths."""

    flat_ids: np.ndarray
    lengths: np.ndarray
    max_length: int | None = None
    padding: str = "post"
    truncating: str = "post"
    encoding: str = "float"
    dtype: str = "float32"
    keys: list[str] | None = None

    def position(self, flat_index: int) -> list[int]:
        """``[b, t]`` in the input of the flat id at ``flat_index``."""
        return segment_position(self.lengths, flat_index)


class _SequenceOptions(TypedDict):
    """The options of a JSON sequences body, as ``SequencesRequest`` keywords."""

    max_length: int | None
    padding: str
    truncating: str
    encoding: str
    dtype: str


def decode_lookup(
    body: bytes, media_type: str, headers: Mapping[str, str], max_ids: int
) -> LookupRequest:
    """Decode a lookup body: JSON ``{"ids": ...}`` or raw little-endian int64/int32 ids."""
    if media_type == OCTET_STREAM:
        ids = binary_ids(body, headers.get("x-dtype"), headers.get("x-shape"), max_ids)
        check_id_count(ids.size, max_ids)
        return LookupRequest(ids)
    fields = json_object(body, LOOKUP_FIELDS, ())
    encoding = dtype = None
    if len(fields) > 1:  # options beside ids or keys (most requests send none)
        encoding = choice(fields.get("encoding"), "encoding", ENCODINGS, "float")
        dtype = choice(fields.get("dtype"), "dtype", OUTPUT_DTYPES, "float32")
    if ("ids" in fields) == ("keys" in fields):
        raise InvalidRequest("give ids, or keys (tables with a vocabulary)", {"missing": ["ids"]})
    if "keys" in fields:
        keys, shape = keys_array(fields["keys"])
        check_id_count(len(keys), max_ids)
        return LookupRequest(None, encoding or "float", dtype or "float32", keys, shape)
    raw_ids = fields["ids"]
    if type(raw_ids) is list and len(raw_ids) > max_ids:
        check_id_count(len(raw_ids), max_ids)
    ids = ids_array(raw_ids, check_booleans=body_may_hold_booleans(body))
    check_id_count(ids.size, max_ids)
    return LookupRequest(ids, encoding or "float", dtype or "float32")


def binary_ids(
    body: bytes, dtype_header: str | None, shape_header: str | None, max_ids: int | None = None
) -> np.ndarray:
    """Raw ids: ``X-Dtype`` int64 (default) or int32, ``X-Shape`` ``a,b,...`` (default 1-D).

    ``X-Shape`` is checked in Python integers (no int64 wrap-around), each dimension at
    most ``max_ids`` (default: the body's id count), before numpy reshapes anything.
    """
    name = (dtype_header or "int64").strip().lower()
    dtype = _BINARY_ID_DTYPES.get(name)
    if dtype is None:
        raise InvalidRequest("X-Dtype must be int64 or int32 for ids", {"x_dtype": name})
    if len(body) % dtype.itemsize:
        raise InvalidBody(
            f"body of {len(body)} bytes is not a whole number of {name} ids",
            {"bytes": len(body), "itemsize": dtype.itemsize},
        )
    count = len(body) // dtype.itemsize
    shape: tuple[int, ...] = (count,)
    if shape_header is not None and shape_header.strip():
        if any(not part.strip() for part in shape_header.split(",")):
            raise InvalidBody("X-Shape must be comma-separated non-negative integers")
        shape = tuple(header_integers(shape_header, "X-Shape"))
        if math.prod(shape) != count:  # exact: header_integers gives Python ints >= 0
            raise InvalidBody(
                f"X-Shape {shape_header[:200]!r} does not match a body of {count} ids",
                {"ids": count},
            )
        check_dims(shape, "X-Shape", count if max_ids is None else max(count, max_ids))
    ids = np.frombuffer(body, dtype=dtype).reshape(shape)
    return ids.astype(np.int64, copy=False)


def _max_length_header(text: str | None) -> int | None:
    """``X-Max-Length``: one decimal integer, exact (no float, no int64 wrap)."""
    if text is None:
        return None
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit() or len(stripped) > 64:
        raise InvalidRequest("X-Max-Length must be a non-negative integer", {"field": "max_length"})
    return int(stripped)


def decode_sequences(
    body: bytes, media_type: str, headers: Mapping[str, str], max_ids: int
) -> SequencesRequest:
    """Decode ragged sequences: JSON, or raw ids with ``X-Lengths: 3,1,0``."""
    if media_type == OCTET_STREAM:
        return _binary_sequences(body, headers, max_ids)
    fields = json_object(body, SEQUENCES_FIELDS, ())
    if ("sequences" in fields) == ("keys" in fields):
        raise InvalidRequest(
            "give sequences (ids), or keys (tables with a vocabulary)", {"missing": ["sequences"]}
        )
    options: _SequenceOptions = {
        "max_length": check_max_length(fields.get("max_length"), max_ids),
        "padding": choice(fields.get("padding"), "padding", SIDES, "post"),
        "truncating": choice(fields.get("truncating"), "truncating", SIDES, "post"),
        "encoding": choice(fields.get("encoding"), "encoding", ENCODINGS, "float"),
        "dtype": choice(fields.get("dtype"), "dtype", OUTPUT_DTYPES, "float32"),
    }
    if "keys" in fields:
        keys, lengths = ragged_keys(fields["keys"], "keys")
        check_id_count(len(keys), max_ids)
        return SequencesRequest(np.zeros(0, dtype=np.int64), lengths, keys=keys, **options)
    sequences = fields["sequences"]
    if type(sequences) is not list or any(type(s) is not list for s in sequences):
        raise InvalidIds("sequences must be a list of lists of integers")
    check_batch(len(sequences), "sequences", max_ids)
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    total = int(lengths.sum())
    check_id_count(total, max_ids)
    try:
        flat = ids_array(
            list(chain.from_iterable(sequences)),
            check_booleans=body_may_hold_booleans(body),
            what="sequences",
        )
    except (InvalidIds, IdOutOfRange) as exc:
        # Report positions as [b, t] in the input, not in the flattened list.
        if exc.detail and exc.detail.get("position"):
            exc.detail["position"] = segment_position(lengths, exc.detail["position"][0])
        raise
    if flat.ndim != 1 or flat.size != total:
        raise InvalidIds("each sequence must be a flat list of integers")
    return SequencesRequest(as_int64_ids(flat), lengths, **options)


def _binary_sequences(body: bytes, headers: Mapping[str, str], max_ids: int) -> SequencesRequest:
    """Raw ids with ``X-Lengths`` (and ``X-Max-Length``, ``X-Padding``, ``X-Truncating``)."""
    flat = binary_ids(body, headers.get("x-dtype"), None)
    lengths_header = headers.get("x-lengths")
    if lengths_header is None:
        raise InvalidRequest("a binary sequences body needs the X-Lengths header")
    # Python ints first: numpy would wrap a sum of huge lengths around to 0.
    length_values = header_integers(lengths_header, "X-Lengths")
    check_id_count(flat.size, max_ids)
    if check_lengths(length_values, "X-Lengths", max_ids) != flat.size:
        raise InvalidBody(f"X-Lengths do not add up to the {flat.size} ids in the body")
    lengths = np.array(length_values, dtype=np.int64)
    return SequencesRequest(
        flat,
        lengths,
        check_max_length(_max_length_header(headers.get("x-max-length")), max_ids),
        choice(headers.get("x-padding"), "padding", SIDES, "post"),
        choice(headers.get("x-truncating"), "truncating", SIDES, "post"),
    )
