"""Every row of API.md's error table this service brings, against a real server."""

from __future__ import annotations

import httpx
import pytest

JSON = {"Content-Type": "application/json"}


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ('{"ids": [-1]}', "id_out_of_range"),
        ('{"ids": [1000]}', "id_out_of_range"),
        ('{"ids": 1000}', "id_out_of_range"),
        ('{"ids": [true]}', "invalid_ids"),
        ('{"ids": [1, false]}', "invalid_ids"),
        ('{"ids": [[1, 2], [3, true]]}', "invalid_ids"),
        ('{"ids": [1.5]}', "invalid_ids"),
        ('{"ids": [1.0]}', "invalid_ids"),
        ('{"ids": ["7"]}', "invalid_ids"),
        ('{"ids": "7"}', "invalid_ids"),
        ('{"ids": [null]}', "invalid_ids"),
        ('{"ids": null}', "invalid_ids"),
        ('{"ids": {"a": 1}}', "invalid_ids"),
        ('{"ids": [1180591620717411303424]}', "id_out_of_range"),
        ('{"ids": [-1180591620717411303424]}', "id_out_of_range"),
        ('{"ids": [9223372036854775808]}', "id_out_of_range"),
        ('{"ids": [[1, 2], [3]]}', "invalid_ids"),
        ('{"idz": [1]}', "invalid_request"),
        ('{"ids": [1], "extra": 1}', "invalid_request"),
        ("{}", "invalid_request"),
        ("[1, 2]", "invalid_request"),
        ('{"ids": [1], "encoding": "hex"}', "invalid_request"),
        ('{"ids": [1], "dtype": "int8"}', "invalid_request"),
    ],
)
def test_lookup_422(client, raw, code) -> None:
    response = client.post("/v1/tables/plain/lookup", content=raw, headers=JSON)
    error = error_of(response, 422, code)
    if code == "id_out_of_range" and "position" in error.get("detail", {}):
        assert isinstance(error["detail"]["position"], list)


def test_out_of_range_names_id_and_position(client) -> None:
    error = error_of(
        client.post("/v1/tables/plain/lookup", json={"ids": [[1, 2], [3, -7]]}),
        422,
        "id_out_of_range",
    )
    assert error["detail"]["id"] == -7 and error["detail"]["position"] == [1, 1]


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b'{"ids": [1e400]}', b'{"ids": [NaN]}', b"\xff\xfe", b"[" * 10000]
)
def test_400_undecodable(client, raw) -> None:
    error_of(client.post("/v1/tables/plain/lookup", content=raw, headers=JSON), 400, "invalid_body")


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"\x01\x02\x03", {}),  # not a whole number of int64
        (b"\x00" * 16, {"X-Shape": "3"}),  # 2 ids, shape says 3
        (b"\x00" * 16, {"X-Shape": "a,b"}),
    ],
)
def test_400_truncated_binary(client, body, headers) -> None:
    headers = {"Content-Type": "application/octet-stream", **headers}
    error_of(
        client.post("/v1/tables/plain/lookup", content=body, headers=headers), 400, "invalid_body"
    )


def test_404_405(client) -> None:
    error_of(client.post("/v1/tables/nope/lookup", json={"ids": [1]}), 404, "table_not_found")
    error_of(client.get("/v1/tables/nope"), 404, "table_not_found")
    error_of(client.get("/no/such/route"), 404, "not_found")
    error_of(client.post("/v1/tables/plain/nothing", json={}), 404, "not_found")
    error_of(client.delete("/healthz"), 405, "method_not_allowed")
    error_of(client.get("/v1/tables/plain/lookup"), 405, "method_not_allowed")


def test_413_body_ids_output(client, server) -> None:
    big = b'{"ids": [' + b"1," * (9 * 1024 * 1024) + b"1]}"
    error_of(
        client.post("/v1/tables/plain/lookup", content=big, headers=JSON), 413, "payload_too_large"
    )
    many = {"ids": [1] * 100_001}
    error_of(client.post("/v1/tables/plain/lookup", json=many), 413, "payload_too_large")
    huge = {"sequences": [[1]], "max_length": 10**12}
    error_of(client.post("/v1/tables/plain/sequences", json=huge), 413, "payload_too_large")


def test_413_refused_before_read(server) -> None:
    """A body announced over the limit is refused without the server reading it."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(
            b"POST /v1/tables/plain/lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")


def test_415(client) -> None:
    response = client.post(
        "/v1/tables/plain/lookup", content=b"ids=1", headers={"Content-Type": "text/plain"}
    )
    error = error_of(response, 415, "unsupported_media_type")
    assert "application/json" in error["message"] and "application/octet-stream" in error["message"]
    form = client.post("/v1/tables/plain/lookup", data={"ids": "1"})
    error_of(form, 415, "unsupported_media_type")


def test_no_content_type_reads_as_json(client) -> None:
    response = client.post("/v1/tables/plain/lookup", content=b'{"ids": [1]}')
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"sequences": [1, 2]},
        {"sequences": [[1, [2]]]},
        {"sequences": "x"},
        {"sequences": [[1]], "padding": "middle"},
        {"sequences": [[1]], "truncating": 1},
        {"sequences": [[1]], "max_length": -1},
        {"sequences": [[1]], "max_length": True},
        {"sequences": [[1]], "max_length": 1.5},
        {"sequences": [[True]]},
    ],
)
def test_sequences_422(client, body) -> None:
    response = client.post("/v1/tables/plain/sequences", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("invalid_ids", "invalid_request")
