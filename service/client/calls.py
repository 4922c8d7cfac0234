"""One ``Call`` per route: the request to send and how to read its answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from service.client.results import WIRE_DTYPES, GroupResult, Looked, decode_vectors, group_result
from service.client.transport import OCTET, Call, answered_version, version_params

Version = str | int | None


def _shape(header: str) -> tuple[int, ...]:
    return tuple(int(d) for d in header.split(",")) if header else ()


def _int_ids(ids: Any) -> np.ndarray:
    array = np.asarray(ids)
    if array.dtype.kind not in "iu":
        raise TypeError("ids must be integers")
    return array


def _table_path(table: str, route: str = "") -> str:
    return f"/v1/tables/{quote(table, safe='')}{route}"


def lookup_call(
    table: str, ids: Any, binary: bool, dtype: str, version: Version
) -> Call[np.ndarray]:
    """``POST /v1/tables/{table}/lookup``: raw bytes both ways, or JSON with base64 vectors."""
    array = _int_ids(ids)
    path, params = _table_path(table, "/lookup"), version_params(version)
    if not binary:
        body = {"ids": array.tolist(), "encoding": "base64", "dtype": dtype}
        return Call(
            "POST", path, lambda r: decode_vectors(r.json(), dtype), json=body, params=params
        )
    out_dtype = WIRE_DTYPES[dtype]

    def parse_binary(response: httpx.Response) -> np.ndarray:
        return np.frombuffer(response.content, out_dtype).reshape(
            _shape(response.headers["x-shape"])
        )

    if dtype != "float32":
        # The binary request has no field for dtype: ask for it with JSON instead.
        body = {"ids": array.tolist(), "dtype": dtype}
        return Call("POST", path, parse_binary, json=body, headers={"Accept": OCTET}, params=params)
    headers = {"Content-Type": OCTET, "Accept": OCTET, "X-Shape": ",".join(map(str, array.shape))}
    content = array.astype("<i8").tobytes()
    return Call("POST", path, parse_binary, content=content, headers=headers, params=params)


def versioned(call: Call[np.ndarray]) -> Call[Looked]:
    """``call`` answering ``Looked``: its vectors and the version named by the response."""

    def parse(response: httpx.Response) -> Looked:
        return Looked(answered_version(response), call.parse(response))

    return Call(call.method, call.path, parse, call.content, call.json, call.headers, call.params)


def sequences_call(
    table: str,
    sequences: Sequence[Sequence[int]],
    options: tuple[int | None, str, str],
    binary: bool,
    version: Version,
) -> Call[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``POST /v1/tables/{table}/sequences``; ``options`` is (max_length, padding, truncating)."""
    max_length, padding, truncating = options
    path, params = _table_path(table, "/sequences"), version_params(version)
    if binary:
        lengths = [len(s) for s in sequences]
        flat = (
            np.concatenate([np.asarray(s, dtype="<i8") for s in sequences])
            if sequences
            else np.zeros(0, "<i8")
        )
        headers = {
            "Content-Type": OCTET,
            "Accept": OCTET,
            "X-Lengths": ",".join(map(str, lengths)),
            "X-Padding": padding,
            "X-Truncating": truncating,
        }
        if max_length is not None:
            headers["X-Max-Length"] = str(max_length)
        content = flat.astype("<i8").tobytes()
        return Call("POST", path, _parse_binary_sequences, content, headers=headers, params=params)

    def parse_json(response: httpx.Response) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = response.json()
        vectors = decode_vectors(data, "float32")
        mask = np.array(data["mask"], dtype=bool).reshape(data["shape"][:2])
        return vectors, mask, np.array(data["lengths"], dtype=np.int64)

    body = {
        "sequences": [list(map(int, s)) for s in sequences],
        "max_length": max_length,
        "padding": padding,
        "truncating": truncating,
        "encoding": "base64",
    }
    return Call("POST", path, parse_json, json=body, params=params)


def _parse_binary_sequences(
    response: httpx.Response,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = _shape(response.headers["x-shape"])
    mask_shape = _shape(response.headers["x-mask-shape"])
    n = int(np.prod(shape)) * 4
    vectors = np.frombuffer(response.content[:n], "<f4").reshape(shape)
    mask = np.frombuffer(response.content[n:], np.uint8).astype(bool).reshape(mask_shape)
    lengths_header = response.headers.get("x-lengths", "")
    return vectors, mask, np.array(_shape(lengths_header), dtype=np.int64)


def bags_call(
    table: str, bags: Sequence[Sequence[int]], weights: Any, mode: str, version: Version
) -> Call[np.ndarray]:
    """``POST /v1/tables/{table}/bags``: pooled vectors, base64 on the wire."""
    body: dict[str, Any] = {
        "bags": [list(map(int, b)) for b in bags],
        "mode": mode,
        "encoding": "base64",
    }
    if weights is not None:
        body["weights"] = [list(map(float, w)) for w in weights]
    path = _table_path(table, "/bags")
    return Call(
        "POST",
        path,
        lambda r: decode_vectors(r.json(), "float32"),
        json=body,
        params=version_params(version),
    )


def neighbors_call(
    table: str, query: dict[str, Any], options: tuple[int, str, bool], version: Version
) -> Call[tuple[np.ndarray, np.ndarray]]:
    """``POST /v1/tables/{table}/neighbors``; ``options`` is (k, metric, exclude_self)."""

    def parse(response: httpx.Response) -> tuple[np.ndarray, np.ndarray]:
        data = response.json()
        return np.array(data["ids"], dtype=np.int64), np.array(data["scores"], dtype=np.float32)

    k, metric, exclude_self = options
    body = {**query, "k": k, "metric": metric, "exclude_self": exclude_self}
    path = _table_path(table, "/neighbors")
    return Call("POST", path, parse, json=body, params=version_params(version))


def neighbors_query(ids: Any, keys: Any, vectors: Any) -> dict[str, Any]:
    """The query part of a neighbors body: exactly one of ids, keys or vectors."""
    given = {
        name: value
        for name, value in (("ids", ids), ("keys", keys), ("vectors", vectors))
        if value is not None
    }
    if len(given) != 1:
        raise TypeError("give exactly one of ids, keys or vectors")
    name, value = next(iter(given.items()))
    return {name: np.asarray(value).tolist() if name != "keys" else list(value)}


def group_lookup_call(group: str, tables: Mapping[str, Any], version: Version) -> Call[GroupResult]:
    """``POST /v1/groups/{group}/lookup``: several members' ids, answered at one version."""
    body = {
        "tables": {member: {"ids": _int_ids(ids).tolist()} for member, ids in tables.items()},
        "encoding": "base64",
    }
    path = f"/v1/groups/{quote(group, safe='')}/lookup"
    return Call(
        "POST", path, lambda r: group_result(r.json()), json=body, params=version_params(version)
    )


def tables_call() -> Call[list[dict[str, Any]]]:
    """``GET /v1/tables``: every table's ``TableInfo``."""
    return Call("GET", "/v1/tables", lambda r: r.json()["tables"])


def table_call(table: str, version: Version) -> Call[dict[str, Any]]:
    """``GET /v1/tables/{table}``: one ``TableInfo`` (of ``version`` when given)."""
    return Call("GET", _table_path(table), lambda r: r.json(), params=version_params(version))


def groups_call() -> Call[list[dict[str, Any]]]:
    """``GET /v1/groups``: every group's ``GroupInfo``."""
    return Call("GET", "/v1/groups", lambda r: r.json()["groups"])


def group_call(group: str) -> Call[dict[str, Any]]:
    """``GET /v1/groups/{group}``: one ``GroupInfo``."""
    return Call("GET", f"/v1/groups/{quote(group, safe='')}", lambda r: r.json())
