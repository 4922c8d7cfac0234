"""Decoding the body of ``POST /v1/admin/tables/{table}/rows``: JSON rows, base64, binary."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from service.decoding.row_update_request import decode_row_update
from service.errors import InvalidBody, InvalidIds, InvalidRequest, PayloadTooLarge, ServiceError

JSON, OCTET = "application/json", "application/octet-stream"


def _json(body: object, max_ids: int = 100):  # type: ignore[no-untyped-def]
    return decode_row_update(orjson.dumps(body), JSON, {}, max_ids)


def test_json_rows_base64_rows_and_binary_decode_alike() -> None:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    as_lists = _json({"ids": [4, 1], "vectors": rows.tolist(), "update_id": "u"})
    encoded = base64.b64encode(rows.astype("<f4").tobytes()).decode()
    as_base64 = _json({"ids": [4, 1], "vectors": encoded})
    body = np.array([4, 1], "<i8").tobytes() + rows.astype("<f4").tobytes()
    as_binary = decode_row_update(body, OCTET, {"x-rows": "2"}, 100)
    for request in (as_lists, as_base64, as_binary):
        assert request.ids.tolist() == [4, 1] and request.ids.dtype == np.int64
        assert np.array_equal(request.vectors, rows)
    assert as_lists.update_id == "u" and as_base64.update_id is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"ids": [1]}, InvalidRequest),  # vectors missing
        ({"ids": [1], "vectors": [[1.0]], "idz": 2}, InvalidRequest),
        ({"ids": 1, "vectors": [[1.0]]}, InvalidIds),
        ({"ids": [1.5], "vectors": [[1.0]]}, InvalidIds),
        ({"ids": [True], "vectors": [[1.0]]}, InvalidIds),
        ({"ids": [[1]], "vectors": [[1.0]]}, InvalidIds),
        ({"ids": [1], "vectors": [[1.0, "x"]]}, InvalidRequest),
        ({"ids": [1], "vectors": [[True]]}, InvalidRequest),
        ({"ids": [1, 2], "vectors": [[1.0], [1.0, 2.0]]}, InvalidRequest),  # ragged
        ({"ids": [1], "vectors": [1.0]}, InvalidRequest),
        ({"ids": [1], "vectors": "not base64!"}, InvalidRequest),
        ({"ids": [1, 2], "vectors": base64.b64encode(b"\0" * 12).decode()}, InvalidRequest),
        ({"ids": [1], "vectors": [[1.0]], "update_id": 5}, InvalidRequest),
        ({"ids": list(range(101)), "vectors": [[1.0]] * 101}, PayloadTooLarge),
    ],
)
def test_bad_json_bodies_are_refused(body: object, error: type[ServiceError]) -> None:
    with pytest.raises(error):
        _json(body)


@pytest.mark.parametrize(
    ("body", "headers", "error"),
    [
        (b"\0" * 12, {}, InvalidRequest),  # no X-Rows
        (b"\0" * 12, {"x-rows": "0"}, InvalidRequest),
        (b"\0" * 12, {"x-rows": "two"}, InvalidBody),
        (b"\0" * 13, {"x-rows": "1"}, InvalidBody),  # not ids then whole float32 rows
        (b"\0" * 8, {"x-rows": "1"}, InvalidBody),  # no row at all
        (b"\0" * 12 * 101, {"x-rows": "101"}, PayloadTooLarge),
    ],
)
def test_bad_binary_bodies_are_refused(
    body: bytes, headers: dict[str, str], error: type[ServiceError]
) -> None:
    with pytest.raises(error):
        decode_row_update(body, OCTET, headers, 100)
