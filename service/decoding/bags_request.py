"""Pooled-bag requests: ragged ``bags`` or ``nn.EmbeddingBag``'s flat ``ids`` + ``offsets``."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from service.decoding.body import choice, json_object
from service.decoding.ids import (
    as_int64_ids,
    body_may_hold_booleans,
    ids_array,
    ragged_keys,
    segment_position,
)
from service.decoding.requests import ENCODINGS, OUTPUT_DTYPES
from service.decoding.shapes import check_batch, check_id_count
from service.errors import IdOutOfRange, InvalidIds, InvalidRequest

FIELDS = frozenset(("bags", "keys", "ids", "offsets", "weights", "mode", "encoding", "dtype"))
MODES = ("sum", "mean", "max", "sqrtn")


@dataclass(frozen=True)
class BagsRequest:
    """Flat ids, per-bag lengths and optional per-id weights."""

    flat_ids: np.ndarray
    lengths: np.ndarray
    weights: np.ndarray | None
    mode: str = "mean"
    encoding: str = "float"
    dtype: str = "float32"
    keys: list[str] | None = None

    def position(self, flat_index: int) -> list[int]:
        """``[bag, i]`` of the flat id at ``flat_index``."""
        return segment_position(self.lengths, flat_index)


def _ragged(value: Any, what: str) -> tuple[list[Any], np.ndarray]:
    if type(value) is not list or any(type(item) is not list for item in value):
        raise InvalidIds(f"{what} must be a list of lists")
    lengths = np.fromiter((len(item) for item in value), dtype=np.int64, count=len(value))
    return list(chain.from_iterable(value)), lengths


def _weights(value: Any, lengths: np.ndarray, flat: bool) -> np.ndarray:
    if flat:
        if type(value) is not list or any(type(v) is list for v in value):
            raise InvalidRequest("with ids + offsets, weights is a flat list, one per id")
        items, counts = value, None
    else:
        items, counts = _ragged(value, "weights")
    if any(type(v) not in (int, float) for v in items):  # bools and strings are not weights
        raise InvalidRequest("weights must be numbers")
    array = np.array(items, dtype=np.float64) if items else np.zeros(0)
    if (counts is not None and not np.array_equal(counts, lengths)) or array.size != int(
        lengths.sum()
    ):
        raise InvalidRequest("weights must have exactly one number per id, bag by bag")
    if not np.isfinite(array).all():
        raise InvalidRequest("weights must be finite")
    return array


def decode_bags(body: bytes, max_ids: int) -> BagsRequest:
    fields = json_object(body, FIELDS, ())
    mode = choice(fields.get("mode"), "mode", MODES, "mean")
    keys = None
    if fields.get("keys") is not None:
        if fields.get("bags") is not None or "ids" in fields:
            raise InvalidRequest("give bags, ids + offsets, or keys: one of them")
        keys, lengths = ragged_keys(fields["keys"], "keys")
        flat_list: list[Any] = keys  # keys, or JSON ids (checked below)
        flat_form = False
    elif fields.get("bags") is not None:
        if "ids" in fields or "offsets" in fields:
            raise InvalidRequest("give either bags, or ids + offsets, not both")
        flat_list, lengths = _ragged(fields["bags"], "bags")
        flat_form = False
    elif "ids" in fields and "offsets" in fields:
        flat_list = fields["ids"]
        if type(flat_list) is not list:
            raise InvalidIds("ids must be a flat list of ids")
        offsets = ids_array(fields["offsets"], check_booleans=True, what="offsets")
        if offsets.ndim != 1 or (offsets.size and offsets[0] != 0):
            raise InvalidRequest("offsets must be a flat list starting at 0")
        if offsets.size == 0 and flat_list:
            raise InvalidRequest("ids without offsets: give offsets [0, ...], one per bag")
        bounds = np.append(offsets, len(flat_list))
        lengths = np.diff(bounds)
        if (lengths < 0).any():
            raise InvalidRequest("offsets must be non-decreasing and at most len(ids)")
        flat_form = True
    else:
        raise InvalidRequest("give bags (lists of ids), or ids + offsets")
    check_id_count(len(flat_list), max_ids)
    check_batch(int(lengths.size), "bags", max_ids)  # empty bags still cost an output row
    weights = None
    if fields.get("weights") is not None:
        if mode not in ("sum", "sqrtn"):
            raise InvalidRequest(
                "weights go with mode sum or sqrtn (as per_sample_weights in torch)"
            )
        weights = _weights(fields["weights"], lengths, flat_form)
    request = BagsRequest(
        np.zeros(0, np.int64),
        lengths,
        weights,
        mode,
        choice(fields.get("encoding"), "encoding", ENCODINGS, "float"),
        choice(fields.get("dtype"), "dtype", OUTPUT_DTYPES, "float32"),
        keys,
    )
    if keys is not None:
        return request
    try:
        flat = ids_array(flat_list, check_booleans=body_may_hold_booleans(body), what="bags")
    except (InvalidIds, IdOutOfRange) as exc:
        if exc.detail and exc.detail.get("position"):
            exc.detail["position"] = request.position(exc.detail["position"][0])
        raise
    if flat.ndim != 1:
        raise InvalidIds("each bag must be a flat list of ids")
    return BagsRequest(as_int64_ids(flat), lengths, weights, mode, request.encoding, request.dtype)
