"""OpenAI embeddings requests with token-id input (OpenAI's own meaning of int / [int] / [[int]])."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from service.decoding.body import choice, json_object
from service.decoding.ids import body_may_hold_booleans, ids_array
from service.errors import InvalidIds, InvalidRequest, PayloadTooLarge

FIELDS = frozenset(("model", "input", "encoding_format", "dimensions", "user"))


@dataclass(frozen=True)
class EmbeddingsRequest:
    """Inputs as flat ids plus per-input lengths."""

    model: str
    flat_ids: np.ndarray
    lengths: np.ndarray
    encoding_format: str = "float"
    dimensions: int | None = None


def decode_embeddings(body: bytes, max_ids: int) -> EmbeddingsRequest:
    fields = json_object(body, FIELDS, ("model", "input"))
    model = fields["model"]
    if type(model) is not str or not model:
        raise InvalidRequest("model must be a table name")
    raw = fields["input"]
    if type(raw) is int:
        groups: list[Any] = [[raw]]  # JSON values, checked by ids_array
    elif type(raw) is list and raw and all(type(item) is list for item in raw):
        groups = raw  # one input per inner list
    elif type(raw) is list and raw and not any(type(item) is list for item in raw):
        groups = [raw]  # a flat list of ids is ONE input
    elif type(raw) is str or (type(raw) is list and raw and all(type(i) is str for i in raw)):
        raise InvalidIds(
            "this service embeds token ids, not text: send an id, a list of ids, or lists of ids"
        )
    else:
        raise InvalidIds(
            "input must be an id, a non-empty list of ids, or a list of non-empty lists of ids"
        )
    lengths = np.fromiter((len(g) for g in groups), dtype=np.int64, count=len(groups))
    if (lengths == 0).any():
        raise InvalidIds("an input is empty", {"index": int(np.argmax(lengths == 0))})
    total = int(lengths.sum())
    if total > max_ids:
        raise PayloadTooLarge(f"{total} ids in one request; the limit is {max_ids}")
    flat = ids_array(
        list(chain.from_iterable(groups)), check_booleans=body_may_hold_booleans(body), what="input"
    )
    if flat.ndim != 1:
        raise InvalidIds("each input must be a flat list of ids")
    dimensions = fields.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise InvalidRequest("dimensions must be a positive integer")
    return EmbeddingsRequest(
        model=model,
        flat_ids=flat,
        lengths=lengths,
        encoding_format=choice(
            fields.get("encoding_format"), "encoding_format", ("float", "base64"), "float"
        ),
        dimensions=dimensions,
    )
