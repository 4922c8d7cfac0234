"""Decoders of the lookup and sequences routes: bytes and headers in, typed requests out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

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
from service.errors import IdOutOfRange, InvalidBody, InvalidIds, InvalidRequest, PayloadTooLarge

ENCODINGS = ("float", "base64")
OUTPUT_DTYPES = ("float32", "float16")
SIDES = ("post", "pre")
_BINARY_ID_DTYPES = {"int64": np.dtype("<i8"), "int32": np.dtype("<i4")}

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


def _check_count(count: int, max_ids: int) -> None:
    if count > max_ids:
        raise PayloadTooLarge(
            f"{count} ids in one request; the limit is {max_ids}",
            {"ids": count, "max_ids": max_ids},
        )


def decode_lookup(
    body: bytes, media_type: str, headers: Mapping[str, str], max_ids: int
) -> LookupRequest:
    """Decode a lookup body: JSON ``{"ids": ...}`` or raw little-endian int64/int32 ids."""
    if media_type == OCTET_STREAM:
        ids = binary_ids(body, headers.get("x-dtype"), headers.get("x-shape"))
        _check_count(ids.size, max_ids)
        return LookupRequest(ids)
    fields = json_object(body, LOOKUP_FIELDS, ())
    encoding = choice(fields.get("encoding"), "encoding", ENCODINGS, "float")
    dtype = choice(fields.get("dtype"), "dtype", OUTPUT_DTYPES, "float32")
    if ("ids" in fields) == ("keys" in fields):
        raise InvalidRequest("give ids, or keys (tables with a vocabulary)", {"missing": ["ids"]})
    if "keys" in fields:
        keys, shape = keys_array(fields["keys"])
        _check_count(len(keys), max_ids)
        return LookupRequest(None, encoding, dtype, keys, shape)
    raw_ids = fields["ids"]
    if type(raw_ids) is list and len(raw_ids) > max_ids:
        _check_count(len(raw_ids), max_ids)
    ids = ids_array(raw_ids, check_booleans=body_may_hold_booleans(body))
    _check_count(ids.size, max_ids)
    return LookupRequest(ids, encoding, dtype)


def binary_ids(body: bytes, dtype_header: str | None, shape_header: str | None) -> np.ndarray:
    """Raw ids: ``X-Dtype`` int64 (default) or int32, ``X-Shape`` ``a,b,...`` (default 1-D)."""
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
        try:
            shape = tuple(int(part) for part in shape_header.split(","))
        except ValueError:
            raise InvalidBody(f"X-Shape {shape_header!r} is not comma-separated integers") from None
        if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != count:
            raise InvalidBody(
                f"X-Shape {shape_header!r} does not match a body of {count} ids",
                {"ids": count},
            )
    ids = np.frombuffer(body, dtype=dtype).reshape(shape)
    return ids.astype(np.int64, copy=False)


def _int_option(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise InvalidRequest(f"{name} must be a non-negative integer or null", {"field": name})
    return value


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
    options = {
        "max_length": _int_option(fields.get("max_length"), "max_length"),
        "padding": choice(fields.get("padding"), "padding", SIDES, "post"),
        "truncating": choice(fields.get("truncating"), "truncating", SIDES, "post"),
        "encoding": choice(fields.get("encoding"), "encoding", ENCODINGS, "float"),
        "dtype": choice(fields.get("dtype"), "dtype", OUTPUT_DTYPES, "float32"),
    }
    if "keys" in fields:
        keys, lengths = ragged_keys(fields["keys"], "keys")
        _check_count(len(keys), max_ids)
        return SequencesRequest(np.zeros(0, dtype=np.int64), lengths, keys=keys, **options)
    sequences = fields["sequences"]
    if type(sequences) is not list or any(type(s) is not list for s in sequences):
        raise InvalidIds("sequences must be a list of lists of integers")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    total = int(lengths.sum())
    _check_count(total, max_ids)
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
    try:
        lengths = np.array([int(p) for p in lengths_header.split(",") if p.strip()], dtype=np.int64)
    except ValueError:
        raise InvalidBody("X-Lengths must be comma-separated integers") from None
    if (lengths < 0).any() or int(lengths.sum()) != flat.size:
        raise InvalidBody(f"X-Lengths do not add up to the {flat.size} ids in the body")
    _check_count(flat.size, max_ids)
    max_length = headers.get("x-max-length")
    try:
        max_len = int(max_length) if max_length is not None else None
    except ValueError:
        raise InvalidRequest("X-Max-Length must be an integer") from None
    return SequencesRequest(
        flat,
        lengths,
        _int_option(max_len, "max_length"),
        choice(headers.get("x-padding"), "padding", SIDES, "post"),
        choice(headers.get("x-truncating"), "truncating", SIDES, "post"),
    )
