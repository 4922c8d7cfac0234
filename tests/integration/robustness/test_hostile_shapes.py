"""Huge, negative and wrapping shapes and lengths: each a clear 4xx, never a 500.

Every number that sizes an allocation (``max_length``, ``X-Max-Length``, ``X-Lengths``,
``X-Shape``, V2 shapes) is checked in Python integers before numpy sees it; a product
or sum that would wrap around int64 (``2**62 * 4 == 0``) must not pass as small.
"""

from __future__ import annotations

import json

import orjson
import pytest

JSON = {"Content-Type": "application/json"}
BIN = {"Content-Type": "application/octet-stream"}
BIG = 2**62
SEQ = "/v1/tables/plain/sequences"
LOOKUP = "/v1/tables/plain/lookup"
BAGS = "/v1/tables/plain/bags"
V2 = "/v2/models/plain/infer"
V2_SEQ = "/v2/models/plain.sequences/infer"


def _v2(shape: list, data: list | None = None, binary: int | None = None) -> bytes:
    tensor: dict = {"name": "ids", "datatype": "INT64", "shape": shape}
    if binary is None:
        tensor["data"] = data if data is not None else []
    else:
        tensor["parameters"] = {"binary_data_size": binary}
    return json.dumps({"inputs": [tensor]}).encode()


def _seq(max_length: object, sequences: object = ((1,), (2,))) -> bytes:
    return orjson.dumps({"sequences": sequences, "max_length": max_length})


CASES = [
    # (name, path, body, headers, status)
    ("max_length-2**62", SEQ, _seq(BIG), JSON, 413),
    ("sequences-too-many-empty", SEQ, orjson.dumps({"sequences": [[]] * 100_001}), JSON, 413),
    ("bags-too-many-empty", BAGS, orjson.dumps({"bags": [[]] * 100_001}), JSON, 413),
    ("bags-offsets-too-many", BAGS, orjson.dumps({"ids": [], "offsets": [0] * 100_001}), JSON, 413),
    ("max_length-2**63", SEQ, _seq(2**63), JSON, 413),
    (
        "max_length-2**64-1",
        SEQ,
        b'{"sequences": [[1]], "max_length": 18446744073709551615}',
        JSON,
        413,
    ),
    (
        "max_length-2**70",
        SEQ,
        b'{"sequences": [[1]], "max_length": 1180591620717411303424}',
        JSON,
        422,
    ),
    ("max_length-negative", SEQ, _seq(-1), JSON, 422),
    ("max_length-bool", SEQ, _seq(True), JSON, 422),
    ("max_length-output-cap", SEQ, _seq(100_000, [[1]] * 1000), JSON, 413),
    (
        "x-max-length-2**62",
        SEQ,
        b"\x01" + b"\x00" * 7,
        {**BIN, "X-Lengths": "1", "X-Max-Length": str(BIG)},
        413,
    ),
    (
        "x-max-length-2**63",
        SEQ,
        b"\x01" + b"\x00" * 7,
        {**BIN, "X-Lengths": "1", "X-Max-Length": str(2**63)},
        413,
    ),
    (
        "x-max-length-signed",
        SEQ,
        b"\x01" + b"\x00" * 7,
        {**BIN, "X-Lengths": "1", "X-Max-Length": "+3"},
        422,
    ),
    ("x-lengths-2**62", SEQ, b"", {**BIN, "X-Lengths": str(BIG)}, 413),
    ("x-lengths-wrap-to-0", SEQ, b"", {**BIN, "X-Lengths": ",".join([str(BIG)] * 4)}, 413),
    ("x-lengths-2**64", SEQ, b"", {**BIN, "X-Lengths": str(2**64)}, 413),
    ("x-lengths-underscore", SEQ, b"\x00" * 8, {**BIN, "X-Lengths": "0_1"}, 400),
    ("x-shape-2**62-squared", LOOKUP, b"", {**BIN, "X-Shape": f"{BIG},{BIG}"}, 400),
    ("x-shape-zero-times-huge", LOOKUP, b"", {**BIN, "X-Shape": f"0,{BIG},{BIG}"}, 413),
    ("x-shape-2**64", LOOKUP, b"", {**BIN, "X-Shape": f"0,{2**64}"}, 413),
    ("x-shape-rank-40", LOOKUP, b"\x00" * 8, {**BIN, "X-Shape": ",".join(["1"] * 40)}, 422),
    ("x-shape-empty-part", LOOKUP, b"\x00" * 8, {**BIN, "X-Shape": "1,,1"}, 400),
    ("v2-0-2**62-2**62", V2, _v2([0, BIG, BIG]), JSON, 413),
    ("v2-2**62-2**62", V2, _v2([BIG, BIG]), JSON, 413),
    ("v2-2**63-wraps", V2, _v2([2**32, 2**32, 0]), JSON, 413),
    ("v2-binary-0-2**62", V2, _v2([0, BIG], binary=0), JSON, 413),
    ("v2-rank-40", V2, _v2([1] * 40, [1]), JSON, 422),
    ("v2-sequences-0-2**62", V2_SEQ, _v2([0, BIG]), JSON, 413),
    # One output named 50 times would be gathered and encoded 50 times past the output cap.
    (
        "v2-repeated-output",
        V2,
        json.dumps(
            {
                "inputs": [{"name": "ids", "datatype": "INT64", "shape": [1], "data": [1]}],
                "outputs": [{"name": "embeddings"}] * 50,
            }
        ).encode(),
        JSON,
        422,
    ),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "headers", "status"), CASES, ids=[c[0] for c in CASES]
)
def test_hostile_shapes_get_their_4xx(client, name, path, body, headers, status) -> None:
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    if path.startswith("/v2"):
        assert isinstance(error, str) and error  # V2's own error shape
    else:
        assert error["code"] in ("payload_too_large", "invalid_request", "invalid_body")
        # Details are JSON-safe: integers beyond int64 are written as strings.
        for value in (error.get("detail") or {}).values():
            assert not isinstance(value, int) or -(2**63) <= value < 2**63


def test_small_shapes_still_serve(client, tables) -> None:
    """The checks refuse only what is over the limits: normal shapes answer exactly."""
    response = client.post(
        LOOKUP,
        content=(b"\x01" + b"\x00" * 7) * 6,
        headers={**BIN, "X-Shape": "2,3", "Accept": "application/octet-stream"},
    )
    assert response.status_code == 200 and response.headers["x-shape"] == "2,3,16"
    response = client.post(SEQ, json={"sequences": [[1, 2], [3]], "max_length": 4})
    assert response.status_code == 200 and response.json()["shape"] == [2, 4, 16]
    response = client.post(V2, content=_v2([0, 5]), headers=JSON)
    assert response.status_code == 200, response.text
