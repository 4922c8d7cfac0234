"""A table pushed into Redis answers every route exactly as the same table from its file.

Real redis-server processes (one node, and a 3-master + 3-replica cluster), real
``embedding-service push`` and ``serve`` processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.support.redis_servers import push_cli, redis_table_toml
from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy

ROWS, DIM = 500, 8
OPTIONS = "padding_idx = -1\nmax_norm = 1.5\n"
VOCAB = "\n".join(f"key{i}" for i in range(ROWS)) + "\n"


@pytest.fixture(scope="module", params=["single", "cluster"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, str]]:
    """A server with ``local`` (from .npy) and ``remote`` (the same rows, in Redis)."""
    store = request.getfixturevalue(f"redis_{request.param}")
    folder = tmp_path_factory.mktemp(f"redis-{request.param}") / "models"
    table = random_table(ROWS, DIM, 11) * 2
    source = write_npy(folder, "local", table, OPTIONS)
    (folder / "local.vocab").write_text(VOCAB)
    version = push_cli(str(source), "--redis", store.url, "--name", "remote")
    # A small hot-row cache, so evictions happen within the test; a table with none.
    (folder / "remote.toml").write_text(redis_table_toml(store.url, OPTIONS + "cache_rows = 64\n"))
    (folder / "remote.vocab").write_text(VOCAB)
    (folder / "nocache.toml").write_text(redis_table_toml(store.url, OPTIONS + "cache_rows = 0\n"))
    (folder / "nocache.vocab").write_text(VOCAB)
    push_cli(str(source), "--redis", store.url, "--name", "nocache")
    with ServerProcess(folder) as server:
        assert server.wait_ready()["status"] == "ready", server.log()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client, version


def _same(client: httpx.Client, path: str, body: dict, name_field: str = "table") -> None:
    answers = {}
    for table in ("local", "remote", "nocache"):
        url = path.format(table=table)
        payload = {**body, "model": table} if "model" in body else body
        response = client.post(url, json=payload)
        assert response.status_code == 200, response.text
        data = response.json()
        data.pop(name_field, None)
        answers[table] = data
    assert answers["remote"] == answers["local"]
    assert answers["nocache"] == answers["local"]


IDS = np.random.default_rng(3).integers(0, ROWS, (6, 40)).tolist()


def test_table_info_comes_from_redis(served: tuple[httpx.Client, str]) -> None:
    client, version = served
    info = client.get("/v1/tables/remote").json()
    assert info["format"] == "redis"
    assert info["backend"] == "redis"
    assert (info["rows"], info["dim"], info["version"]) == (ROWS, DIM, version)
    assert info["padding_idx"] == ROWS - 1
    assert info["batching"]["enabled"] is True
    client.post("/v1/tables/remote/lookup", json={"ids": [1, 2]})
    metrics = client.get("/metrics").text
    assert 'embedding_hot_rows{stat="capacity",table="remote"} 64.0' in metrics.replace(
        'table="remote",stat="capacity"', 'stat="capacity",table="remote"'
    )


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_lookup_matches_the_file(served: tuple[httpx.Client, str], encoding: str) -> None:
    client, _ = served
    for _ in range(3):  # cold, warm, evicting (cache_rows = 64 < the ids asked)
        _same(client, "/v1/tables/{table}/lookup", {"ids": IDS, "encoding": encoding})


def test_binary_lookup_matches_the_file(served: tuple[httpx.Client, str]) -> None:
    client, _ = served
    ids = np.array(IDS, dtype=np.int64)
    bodies = set()
    for table in ("local", "remote", "nocache"):
        response = client.post(
            f"/v1/tables/{table}/lookup",
            content=ids.tobytes(),
            headers={
                "content-type": "application/octet-stream",
                "accept": "application/octet-stream",
            },
        )
        assert response.status_code == 200
        bodies.add(response.content)
    assert len(bodies) == 1


def test_sequences_bags_keys_v2_openai_match_the_file(served: tuple[httpx.Client, str]) -> None:
    client, _ = served
    sequences = [[5, 9, ROWS - 1, 2], [7], [], list(range(30))]
    _same(client, "/v1/tables/{table}/sequences", {"sequences": sequences, "max_length": 8})
    _same(client, "/v1/tables/{table}/bags", {"bags": sequences, "mode": "mean"})
    _same(
        client,
        "/v1/tables/{table}/bags",
        {"bags": [[1, 2], [3]], "weights": [[0.5, 2.0], [1.0]], "mode": "sqrtn"},
    )
    _same(client, "/v1/tables/{table}/lookup", {"keys": [["key1", "key7"], ["key499", "key0"]]})
    v2 = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    _same(client, "/v2/models/{table}/infer", v2, name_field="model_name")
    _same(client, "/v1/embeddings", {"model": "x", "input": [[1, 2, 3], [4]]}, name_field="model")


def test_neighbors_is_a_clear_4xx_for_redis_tables(served: tuple[httpx.Client, str]) -> None:
    client, _ = served
    response = client.post("/v1/tables/remote/neighbors", json={"ids": [1], "k": 3})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert "redis" in response.json()["error"]["message"].lower()


def test_out_of_range_ids_are_422_not_a_redis_read(served: tuple[httpx.Client, str]) -> None:
    client, _ = served
    response = client.post("/v1/tables/remote/lookup", json={"ids": [ROWS]})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "id_out_of_range"
