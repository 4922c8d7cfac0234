"""A corpus of hostile inputs against a real server: each gets its documented 4xx, never a 5xx."""

from __future__ import annotations

import contextlib
import json
import select
import socket

import httpx
import numpy as np
import pytest

JSON = {"Content-Type": "application/json"}
BIN = {"Content-Type": "application/octet-stream"}

CORPUS = [
    # (name, route, body bytes, headers, status, code)
    ("negative", "lookup", b'{"ids": [-1]}', JSON, 422, "id_out_of_range"),
    ("rows", "lookup", b'{"ids": [1000]}', JSON, 422, "id_out_of_range"),
    ("2**63", "lookup", b'{"ids": [9223372036854775808]}', JSON, 422, "id_out_of_range"),
    ("2**70", "lookup", b'{"ids": [1180591620717411303424]}', JSON, 422, "id_out_of_range"),
    ("-2**70", "lookup", b'{"ids": [-1180591620717411303424]}', JSON, 422, "id_out_of_range"),
    ("true", "lookup", b'{"ids": [true, 1]}', JSON, 422, "invalid_ids"),
    ("float", "lookup", b'{"ids": [0.5]}', JSON, 422, "invalid_ids"),
    ("1e400", "lookup", b'{"ids": [1e400]}', JSON, 400, "invalid_body"),
    ("NaN", "lookup", b'{"ids": [NaN]}', JSON, 400, "invalid_body"),
    ("Infinity", "lookup", b'{"ids": [Infinity]}', JSON, 400, "invalid_body"),
    ("string", "lookup", b'{"ids": ["1"]}', JSON, 422, "invalid_ids"),
    ("null", "lookup", b'{"ids": null}', JSON, 422, "invalid_ids"),
    ("object", "lookup", b'{"ids": {"0": 1}}', JSON, 422, "invalid_ids"),
    (
        "deep",
        "lookup",
        b'{"ids": ' + b"[" * 10_000 + b"1" + b"]" * 10_000 + b"}",
        JSON,
        400,
        "invalid_body",
    ),
    (
        "deep-seq",
        "sequences",
        b'{"sequences": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        JSON,
        400,
        "invalid_body",
    ),
    (
        "too-many-ids",
        "lookup",
        b'{"ids": [' + b"1," * 999_999 + b"1]}",
        JSON,
        413,
        "payload_too_large",
    ),
    (
        "text/plain",
        "lookup",
        b'{"ids": [1]}',
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    (
        "form",
        "lookup",
        b"ids=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    ("unknown-field", "lookup", b'{"ids": [1], "idz": 2}', JSON, 422, "invalid_request"),
    ("bad-encoding", "lookup", b'{"ids": [1], "encoding": "utf-8"}', JSON, 422, "invalid_request"),
    (
        "bad-padding",
        "sequences",
        b'{"sequences": [[1]], "padding": "both"}',
        JSON,
        422,
        "invalid_request",
    ),
    (
        "huge-max-length",
        "sequences",
        b'{"sequences": [[1], [2]], "max_length": 1000000000000}',
        JSON,
        413,
        "payload_too_large",
    ),
    ("odd-binary", "lookup", b"\x01\x02\x03\x04\x05", BIN, 400, "invalid_body"),
    ("x-shape-mismatch", "lookup", b"\x00" * 24, {**BIN, "X-Shape": "2,2"}, 400, "invalid_body"),
    ("x-shape-negative", "lookup", b"\x00" * 24, {**BIN, "X-Shape": "-3"}, 400, "invalid_body"),
    ("x-dtype-bad", "lookup", b"\x00" * 24, {**BIN, "X-Dtype": "float32"}, 422, "invalid_request"),
    ("binary-out-of-range", "lookup", (2**40).to_bytes(8, "little"), BIN, 422, "id_out_of_range"),
    (
        "binary-negative",
        "lookup",
        (-5).to_bytes(8, "little", signed=True),
        BIN,
        422,
        "id_out_of_range",
    ),
    ("empty-body", "lookup", b"", JSON, 400, "invalid_body"),
    ("utf16", "lookup", '{"ids": [1]}'.encode("utf-16"), JSON, 400, "invalid_body"),
    (
        "seq-lengths-mismatch",
        "sequences",
        b"\x00" * 16,
        {**BIN, "X-Lengths": "3"},
        400,
        "invalid_body",
    ),
]


@pytest.mark.parametrize(
    ("name", "route", "body", "headers", "status", "code"), CORPUS, ids=[c[0] for c in CORPUS]
)
def test_hostile_corpus(client, name, route, body, headers, status, code) -> None:
    response = client.post(f"/v1/tables/plain/{route}", content=body, headers=headers)
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"]["code"] == code


def test_100mb_streamed_body_refused_without_buffering(server) -> None:
    """A chunked 100 MB upload is cut off once it passes the 16 MiB limit, not read whole."""
    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(
            b"POST /v1/tables/plain/lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"1," * (512 * 1024)  # 1 MiB
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        while sent < 100 * 1024 * 1024:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(frame)
            except OSError:  # the server closed the connection after refusing
                break
            sent += len(chunk)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply:
                    break
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < 48 * 1024 * 1024, f"{sent / 2**20:.0f} MiB were accepted before the refusal"
    assert httpx.get(server.url + "/healthz").status_code == 200


V2 = "/v2/models/plain/infer"
IDS = {"name": "ids", "datatype": "INT64", "shape": [1], "data": [1]}
NEWER_ROUTES = [
    # (name, path, JSON body, status); V2 answers {"error": str}, the rest API.md's body
    ("v2-params-string", V2, {"inputs": [IDS], "parameters": "x"}, 422),
    (
        "v2-output-params-string",
        V2,
        {"inputs": [IDS], "outputs": [{"name": "embeddings", "parameters": "x"}]},
        422,
    ),
    ("v2-input-params-list", V2, {"inputs": [{**IDS, "parameters": []}]}, 422),
    (
        "v2-binary-size-string",
        V2,
        {"inputs": [{**IDS, "parameters": {"binary_data_size": "x"}}]},
        400,
    ),
    ("v2-ragged-data", V2, {"inputs": [{**IDS, "shape": [2], "data": [[1], [2, 3]]}]}, 422),
    ("v2-bool-shape", V2, {"inputs": [{**IDS, "shape": [True]}]}, 422),
    ("v2-huge-shape", V2, {"inputs": [{**IDS, "shape": [2**40, 2**40]}]}, 413),
    ("v2-out-of-range", V2, {"inputs": [{**IDS, "data": [10**6]}]}, 422),
    ("v2-not-object", V2, [1], 422),
    ("openai-nested", "/v1/embeddings", {"model": "plain", "input": [[1], [2, [3]]]}, 422),
    ("openai-bool", "/v1/embeddings", {"model": "plain", "input": [True]}, 422),
    ("openai-2**70", "/v1/embeddings", {"model": "plain", "input": 2**70}, 422),
    (
        "openai-dimensions-bool",
        "/v1/embeddings",
        {"model": "plain", "input": [1], "dimensions": True},
        422,
    ),
    (
        "bags-weights-overflow",
        "/v1/tables/plain/bags",
        {"bags": [[1, 2]], "weights": [[1e308, 1e308]], "mode": "sum"},
        422,
    ),
    ("bags-ids-without-offsets", "/v1/tables/plain/bags", {"ids": [1, 2], "offsets": []}, 422),
    ("bags-offsets-2**70", "/v1/tables/plain/bags", {"ids": [1, 2], "offsets": [0, 2**70]}, 422),
    ("neighbors-beyond-float32", "/v1/tables/plain/neighbors", {"vectors": [1e308] * 16}, 422),
    ("neighbors-ragged", "/v1/tables/plain/neighbors", {"vectors": [[1.0] * 16, [1.0]]}, 422),
    ("neighbors-keys-no-vocab", "/v1/tables/plain/neighbors", {"keys": ["a"]}, 422),
    ("keys-no-vocab", "/v1/tables/plain/lookup", {"keys": ["a"]}, 422),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "status"), NEWER_ROUTES, ids=[c[0] for c in NEWER_ROUTES]
)
def test_hostile_corpus_newer_routes(client, name, path, body, status) -> None:
    response = client.post(path, content=json.dumps(body).encode(), headers=JSON)
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert isinstance(error, str) if path.startswith("/v2") else error["code"]


def test_sqrtn_with_huge_weights_is_exact(client, tables) -> None:
    body = {
        "bags": [[1], [2, 3]],
        "weights": [[1e308], [1e300, 1e300]],
        "mode": "sqrtn",
        "encoding": "base64",
    }
    data = client.post("/v1/tables/plain/bags", json=body).json()
    import base64

    got = np.frombuffer(base64.b64decode(data["vectors"]), "<f4").reshape(2, -1)
    table = tables["plain"].astype(np.float64)
    np.testing.assert_allclose(got[0], table[1], rtol=1e-6)
    np.testing.assert_allclose(got[1], (table[2] + table[3]) / np.sqrt(2), rtol=1e-6)
