"""Lookup and sequences requests from body bytes to encoded response.

The same two coroutines serve the lean ASGI hot path and the FastAPI routes:
decode (numpy) -> validate against the table -> batcher/backend -> semantics
(max_norm, masks) -> encode (cached row text, base64, binary).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson

from service import metrics
from service.decoding.bags_request import BagsRequest, decode_bags
from service.decoding.body import JSON, request_media_type, wants_binary
from service.decoding.ids import check_in_range
from service.decoding.neighbors_request import decode_neighbors
from service.decoding.requests import decode_lookup, decode_sequences
from service.encoding.responses import (
    EncodedResponse,
    binary_lookup,
    binary_sequences,
    json_envelope,
    nest_texts,
    vectors_base64,
    vectors_json,
)
from service.encoding.row_text_cache import rows_text
from service.errors import InvalidRequest, PayloadTooLarge, UnknownKey, UnsupportedMediaType
from service.repository.vocabulary import ZERO_ROW
from service.semantics.max_norm import renormalise
from service.semantics.pooling import pool_bags
from service.semantics.sequence_layout import output_length, sequence_layout
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from service.tables.served_table import ServedTable


@dataclass
class Timing:
    """Where a request's time went (sent back as X-Queue-Time-Ms / X-Backend-Time-Ms)."""

    queue_seconds: float = 0.0
    backend_seconds: float = 0.0

    def headers(self) -> dict[str, str]:
        return {
            "x-queue-time-ms": "%.3f" % (self.queue_seconds * 1000),
            "x-backend-time-ms": "%.3f" % (self.backend_seconds * 1000),
        }


class LookupHandlers:
    """The lookup and sequences routes, independent of the HTTP framework around them."""

    def __init__(self, registry: TableRegistry, settings: ServiceSettings) -> None:
        self.registry = registry
        self.max_ids = settings.max_ids
        self.max_output_bytes = settings.max_output_bytes
        self._zero_text: dict[int, bytes] = {}

    # ------------------------------------------------------------------ helpers
    def _check_output(self, count: int, dim: int, itemsize: int) -> None:
        size = count * dim * itemsize
        if size > self.max_output_bytes:
            raise PayloadTooLarge(
                f"the response would hold {size} bytes of vectors; the limit is {self.max_output_bytes}",
                {"bytes": size, "max_output_bytes": self.max_output_bytes},
            )

    async def rows(
        self, table: ServedTable, ids: np.ndarray, dtype: str, timing: Timing
    ) -> np.ndarray:
        """Final rows for 1-D ids: gathered, float32, renormalised when configured."""
        result = await table.batcher.gather(ids)
        timing.queue_seconds += result.queue_seconds
        timing.backend_seconds += result.backend_seconds
        rows = result.rows
        if table.options.max_norm is not None:
            # Our own slice of the batch result (or a fresh cast): safe to rescale in place.
            rows = rows.astype(
                np.float32, copy=rows.dtype != np.float32 or not rows.flags.writeable
            )
            renormalise(rows, table.options.max_norm, table.options.norm_type)
        if dtype == "float16":
            return rows.astype(np.float16)
        return rows.astype(np.float32, copy=False)

    async def _row_texts(self, table: ServedTable, flat: np.ndarray, timing: Timing) -> list[bytes]:
        """JSON text of each row of ``flat`` from the cache; misses gathered once, then cached."""
        keys = flat.tolist()
        texts, missing = table.row_cache.lookup(keys)
        if missing:
            miss_ids = np.unique(flat[missing])
            miss_keys = miss_ids.tolist()
            miss_texts = rows_text(await self.rows(table, miss_ids, "float32", timing))
            table.row_cache.store(miss_keys, miss_texts)
            found = dict(zip(miss_keys, miss_texts, strict=True))
            for i in missing:
                texts[i] = found[keys[i]]
        return texts  # type: ignore[return-value]

    @staticmethod
    def _key_ids(
        table: ServedTable, keys: list[str], position=None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows of string keys by the table's vocabulary; a mask of keys given a zero vector."""
        if table.vocabulary is None:
            raise InvalidRequest(f"table {table.name!r} has no vocabulary: send ids")
        ids = table.vocabulary.ids_for(keys, position)
        zero = ids == ZERO_ROW
        if zero.any():
            return np.where(zero, 0, ids), zero
        return ids, None

    def _zero_row_text(self, dim: int) -> bytes:
        text = self._zero_text.get(dim)
        if text is None:
            text = self._zero_text[dim] = vectors_json(np.zeros(dim, dtype=np.float32))
        return text

    # ------------------------------------------------------------------- routes
    async def lookup(
        self, table_name: str, body: bytes, headers: Mapping[str, str]
    ) -> EncodedResponse:
        """``POST /v1/tables/{table}/lookup``."""
        media_type = request_media_type(headers.get("content-type"))
        table = self.registry.get(table_name)
        request = decode_lookup(body, media_type, headers, self.max_ids)
        zero = None
        if request.keys is not None:
            flat_ids, zero = self._key_ids(table, request.keys)
            ids = flat_ids.reshape(request.key_shape)
        else:
            ids = request.ids
            check_in_range(ids, table.rows)
        binary = wants_binary(headers.get("accept"))
        self._check_output(ids.size, table.dim, 2 if request.dtype == "float16" else 4)
        shape = (*ids.shape, table.dim)
        flat = ids.reshape(-1)
        timing = Timing()
        started = time.perf_counter()
        if (
            not binary
            and request.encoding == "float"
            and request.dtype == "float32"
            and table.row_cache.enabled
        ):
            texts = await self._row_texts(table, flat, timing)
            if zero is not None:
                zero_text = self._zero_row_text(table.dim)
                for i in np.flatnonzero(zero).tolist():
                    texts[i] = zero_text
            body_out = json_envelope(table_name, shape, "float32", nest_texts(texts, ids.shape))
            response = EncodedResponse(body_out)
        else:
            vectors = await self.rows(table, flat, request.dtype, timing)
            if zero is not None:
                vectors = np.where(zero[:, None], 0, vectors).astype(vectors.dtype)
            vectors = vectors.reshape(shape)
            if binary:
                response = binary_lookup(vectors, request.dtype)
            else:
                encoded = (
                    vectors_base64(vectors)
                    if request.encoding == "base64"
                    else vectors_json(vectors)
                )
                response = EncodedResponse(json_envelope(table_name, shape, request.dtype, encoded))
        _observe_encode(table_name, request.encoding if not binary else "binary", started, timing)
        response.headers.update(timing.headers())
        return response

    async def bags(
        self, table_name: str, body: bytes, headers: Mapping[str, str]
    ) -> EncodedResponse:
        """``POST /v1/tables/{table}/bags``: pooled multi-hot lookups (``nn.EmbeddingBag``)."""
        media_type = request_media_type(headers.get("content-type"))
        if media_type != JSON:
            raise UnsupportedMediaType("bags takes a JSON body", {"accepted": [JSON]})
        table = self.registry.get(table_name)
        request = decode_bags(body, self.max_ids)
        zero = None
        if request.keys is not None:
            flat_ids, zero = self._key_ids(table, request.keys, request.position)
            request = replace(request, flat_ids=flat_ids)
        else:
            check_in_range(request.flat_ids, table.rows, request.position)
        self._check_output(request.lengths.size, table.dim, 2 if request.dtype == "float16" else 4)
        ids, counts, weights = _bag_layout(request, table.pad_id, zero)
        timing = Timing()
        started = time.perf_counter()
        rows = (
            await self.rows(table, ids, "float32", timing)
            if ids.size
            else np.zeros((0, table.dim), np.float32)
        )
        with np.errstate(over="ignore", invalid="ignore"):
            pooled = pool_bags(rows, counts, weights, request.mode)
        if not np.isfinite(pooled).all():
            raise InvalidRequest("weights too large: a pooled vector overflows float32")
        if request.dtype == "float16":
            pooled = pooled.astype(np.float16)
        if wants_binary(headers.get("accept")):
            response = binary_lookup(pooled, request.dtype)
        else:
            encoded = (
                vectors_base64(pooled) if request.encoding == "base64" else vectors_json(pooled)
            )
            response = EncodedResponse(
                json_envelope(table_name, pooled.shape, request.dtype, encoded)
            )
        _observe_encode(table_name, "bags", started, timing)
        response.headers.update(timing.headers())
        return response

    async def neighbors(
        self, table_name: str, body: bytes, headers: Mapping[str, str]
    ) -> EncodedResponse:
        """``POST /v1/tables/{table}/neighbors``: exact nearest rows, best first."""
        if request_media_type(headers.get("content-type")) != JSON:
            raise UnsupportedMediaType("neighbors takes a JSON body", {"accepted": [JSON]})
        table = self.registry.get(table_name)
        weights = table.local_weights("neighbors")
        request = decode_neighbors(body)
        exclude = None
        query_ids = request.ids
        if request.keys is not None:
            query_ids, zero = self._key_ids(table, request.keys)
            if zero is not None:
                at = int(np.argmax(zero))
                raise UnknownKey(
                    f"key {request.keys[at]!r} is not in the vocabulary", {"key": request.keys[at]}
                )
        if query_ids is not None:
            check_in_range(query_ids, table.rows)
            queries = weights.take(query_ids)
            exclude = query_ids if request.exclude_self else None
        else:
            queries = request.vectors
            if queries.shape[1] != table.dim:
                raise InvalidRequest(
                    f"query vectors have {queries.shape[1]} components; the table's dim is {table.dim}"
                )
        try:
            ids, scores = await table.search(queries, request.k, request.metric, exclude)
        except FloatingPointError:
            raise InvalidRequest("query vectors too large: their scores overflow float32") from None
        payload = {"table": table_name, "ids": ids, "scores": scores}
        if table.vocabulary is not None:
            payload["keys"] = table.vocabulary.keys_of(ids)
        return EncodedResponse(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))

    async def sequences(
        self, table_name: str, body: bytes, headers: Mapping[str, str]
    ) -> EncodedResponse:
        """``POST /v1/tables/{table}/sequences``: padded vectors, mask and lengths."""
        media_type = request_media_type(headers.get("content-type"))
        table = self.registry.get(table_name)
        request = decode_sequences(body, media_type, headers, self.max_ids)
        zero = None
        if request.keys is not None:
            flat_ids, zero = self._key_ids(table, request.keys, request.position)
            request = replace(request, flat_ids=flat_ids)
        else:
            check_in_range(request.flat_ids, table.rows, request.position)
        batch = int(request.lengths.size)
        length = output_length(request.lengths, request.max_length)
        self._check_output(batch * length, table.dim, 2 if request.dtype == "float16" else 4)
        layout = sequence_layout(
            request.lengths, request.max_length, request.padding, request.truncating
        )
        kept_ids = request.flat_ids[layout.kept]
        valid = (
            kept_ids != table.pad_id if table.pad_id is not None else np.ones(kept_ids.size, bool)
        )
        if zero is not None:  # oov = "zero": a zero vector, masked like padding
            valid &= ~zero[layout.kept]
        mask = np.zeros(batch * length, dtype=bool)
        mask[layout.slots] = valid
        gather_ids = kept_ids[valid]
        slots = layout.slots[valid]
        shape = (batch, length, table.dim)
        mask2d = mask.reshape(batch, length)
        timing = Timing()
        binary = wants_binary(headers.get("accept"))
        if (
            not binary
            and request.encoding == "float"
            and request.dtype == "float32"
            and table.row_cache.enabled
        ):
            texts = [self._zero_row_text(table.dim)] * (batch * length)
            for slot, text in zip(
                slots.tolist(), await self._row_texts(table, gather_ids, timing), strict=True
            ):
                texts[slot] = text
            vectors_text = nest_texts(texts, (batch, length))
        else:
            out_dtype = np.float16 if request.dtype == "float16" else np.float32
            vectors = np.zeros((batch * length, table.dim), dtype=out_dtype)
            if gather_ids.size:
                vectors[slots] = await self.rows(table, gather_ids, request.dtype, timing)
            vectors = vectors.reshape(shape)
            if binary:
                response = binary_sequences(vectors, mask2d, layout.lengths, request.dtype)
                response.headers.update(timing.headers())
                return response
            vectors_text = (
                vectors_base64(vectors) if request.encoding == "base64" else vectors_json(vectors)
            )
        body_out = json_envelope(
            table_name,
            shape,
            request.dtype,
            vectors_text,
            mask=orjson.dumps(mask2d, option=orjson.OPT_SERIALIZE_NUMPY),
            lengths=orjson.dumps(layout.lengths.tolist()),
        )
        response = EncodedResponse(body_out)
        response.headers.update(timing.headers())
        return response


def _bag_layout(
    request: BagsRequest, pad_id: int | None, zero: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Ids that enter the pool (padding and zero-OOV keys left out, as EmbeddingBag leaves out
    padding), per-bag counts, weights."""
    if pad_id is None and zero is None:
        return request.flat_ids, request.lengths, request.weights
    keep = np.ones(request.flat_ids.size, bool) if pad_id is None else request.flat_ids != pad_id
    if zero is not None:
        keep &= ~zero
    bag_of = np.repeat(np.arange(request.lengths.size), request.lengths)
    counts = np.bincount(bag_of[keep], minlength=request.lengths.size).astype(np.int64)
    weights = request.weights[keep] if request.weights is not None else None
    return request.flat_ids[keep], counts, weights


_encode_children: dict[tuple[str, str], Any] = {}


def _observe_encode(table: str, fmt: str, started: float, timing: Timing) -> None:
    """Encode time: the response-building span less the time spent queued and gathering."""
    child = _encode_children.get((table, fmt))
    if child is None:
        child = _encode_children[(table, fmt)] = metrics.ENCODE_SECONDS.labels(table, fmt)
    spent = time.perf_counter() - started - timing.queue_seconds - timing.backend_seconds
    child.observe(max(spent, 0.0))


_route_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def route_metrics(table: str, route: str, status: int, seconds: float) -> None:
    """Count and time one answered request (unknown tables share one label).

    Label children are cached: ``labels()`` costs more than the rest of a W1 request.
    """
    key = (table, route, status)
    children = _route_children.get(key)
    if children is None:
        children = _route_children[key] = (
            metrics.REQUESTS.labels(table, route, str(status)),
            metrics.REQUEST_SECONDS.labels(table, route, str(status)),
        )
    children[0].inc()
    children[1].observe(seconds)
