"""Row updates of file tables with real servers: two workers each, two processes on one
repository (API.md, "Row updates"). Every wait polls with a deadline; no wall-clock threshold."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np

from service.client import AsyncEmbeddingClient, EmbeddingClient
from service.repository.compact import convert_table
from tests.integration.updates.served import (
    ADMIN,
    AUTH,
    applied_in_workers,
    fresh_lookup,
    lookup,
    start,
    table_info,
    update,
    wait_served,
)
from tests.support.polling import wait_until
from tests.support.tables import random_table

ROWS, DIM = 4096, 8


def _repository(tmp_path: Path) -> tuple[Path, np.ndarray]:
    models = tmp_path / "models"
    models.mkdir()
    table = random_table(ROWS, DIM, 5)
    np.save(models / "t.npy", table)
    return models, table


def _load(stop: threading.Event, url: str, errors: list[str]) -> None:
    """Lookup load on one connection until ``stop``."""
    rng = np.random.default_rng(7)
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            ids = rng.integers(0, ROWS, 32).tolist()
            response = client.post("/v1/tables/t/lookup", json={"ids": ids})
            if response.status_code != 200:
                errors.append(response.text)


def test_an_update_is_served_by_every_worker_of_both_processes_under_load(
    tmp_path: Path,
) -> None:
    models, table = _repository(tmp_path)
    ids = [3, 1000, 4095]
    new = np.full((3, DIM), 0.5, np.float32)
    with start(models, "--log-level", "info") as one, start(models) as two:
        stop, errors = threading.Event(), []
        loads = [threading.Thread(target=_load, args=(stop, u, errors)) for u in (one.url, two.url)]
        for thread in loads:
            thread.start()
        try:
            response = update(one.url, "t", ids, new, "first")
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["table"] == "t" and answer["sequence"] == 1 and answer["rows"] == 3
            assert answer["version"] == table_info(one.url, "t")["version"]
            # Every worker of both processes applied it (each counts its application) ...
            for server in (one, two):
                wait_until(
                    lambda s=server: applied_in_workers(s.url, "t") >= 2,
                    f"every worker of {server.url} applying the update",
                )
            # ... and serves it, on any connection.
            wait_served([one.url, two.url], "t", ids, new)
        finally:
            stop.set()
            for thread in loads:
                thread.join()
        assert errors == []
        for url in (one.url, two.url):
            assert table_info(url, "t")["update_sequence"] == 1
        untouched = fresh_lookup(two.url, "t", [4, 5])
        assert np.array_equal(untouched, table[[4, 5]])
        metrics = httpx.get(f"{one.url}/metrics").text
        assert 'embedding_row_updates_total{table="t"} 3.0' in metrics
        assert 'route="rows"' in metrics
        assert "row update: table=t" in one.log()


def test_same_update_id_answers_the_first_sequence_and_applies_nothing(tmp_path: Path) -> None:
    models, _ = _repository(tmp_path)
    with start(models, workers=1) as server:
        first = update(server.url, "t", [7], np.ones((1, DIM)), "job-1").json()
        with EmbeddingClient(server.url) as client:
            again = client.update_rows("t", [7], np.zeros((1, DIM)), "job-1", admin_key=ADMIN)
        assert again == first

        async def twice() -> dict:
            async with AsyncEmbeddingClient(server.url, api_key=ADMIN) as client:
                answer: dict = await client.update_rows(
                    "t", [7], np.zeros((1, DIM)), "job-1", version=first["version"]
                )
                return answer

        assert asyncio.run(twice()) == first
        assert np.array_equal(fresh_lookup(server.url, "t", [7]), np.ones((1, DIM)))
        assert table_info(server.url, "t")["update_sequence"] == 1


def test_every_bad_update_is_refused_with_nothing_applied(tmp_path: Path) -> None:
    models, table = _repository(tmp_path)
    convert_table(random_table(64, DIM, 9), models / "small.npy", "int8")
    url_rows = "/v1/admin/tables/{}/rows"
    cases = [
        ("t", {"ids": [ROWS], "vectors": [[0.0] * DIM]}, {}, 422, "id_out_of_range"),
        ("t", {"ids": [-1], "vectors": [[0.0] * DIM]}, {}, 422, "id_out_of_range"),
        ("t", {"ids": [2, 2], "vectors": [[0.0] * DIM] * 2}, {}, 422, "invalid_ids"),
        ("t", {"ids": [1.5], "vectors": [[0.0] * DIM]}, {}, 422, "invalid_ids"),
        ("t", {"ids": [2], "vectors": [[0.0] * (DIM - 1)]}, {}, 422, "invalid_request"),
        ("t", {"ids": [2, 3], "vectors": [[0.0] * DIM]}, {}, 422, "invalid_request"),
        ("t", {"ids": [2], "vectors": [[1e39] * DIM]}, {}, 422, "invalid_request"),
        ("t", {"ids": [2], "vectors": [[0.0] * DIM], "idz": 1}, {}, 422, "invalid_request"),
        ("t", {"ids": [2], "vectors": [[0.0] * DIM], "update_id": "x" * 129}, {}, 422, None),
        ("t", {"ids": list(range(9)), "vectors": [[0.0] * DIM] * 9}, {}, 413, None),
        ("small", {"ids": [1], "vectors": [[0.0] * DIM]}, {}, 409, "not_updatable"),
        ("nope", {"ids": [1], "vectors": [[0.0] * DIM]}, {}, 404, "table_not_found"),
        ("t", {"ids": [1], "vectors": [[0.0] * DIM]}, {"version": "9"}, 404, "version_not_found"),
    ]
    with (
        start(models, "--max-ids", "8", workers=1) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for table_name, body, query, status, code in cases:
            path = url_rows.format(table_name)
            response = client.post(path, json=body, headers=AUTH, params=query)
            assert response.status_code == status, (body, response.text)
            if code is not None:
                assert response.json()["error"]["code"] == code, response.text
        nan_rows = np.full((1, DIM), np.nan, "<f4").tobytes()
        binary = np.array([2], "<i8").tobytes() + nan_rows
        headers = {**AUTH, "Content-Type": "application/octet-stream", "X-Rows": "1"}
        response = client.post(url_rows.format("t"), content=binary, headers=headers)
        assert response.status_code == 422, response.text
        response = client.post(url_rows.format("t"), content=binary[:-1], headers=headers)
        assert response.status_code == 400, response.text
        unauthorised = client.post(url_rows.format("t"), json=cases[0][1])
        assert unauthorised.status_code == 401
        assert table_info(server.url, "t")["update_sequence"] == 0
        assert np.array_equal(lookup(client, "t", list(range(8))), table[:8])
        good = np.arange(DIM, dtype="<f4").reshape(1, DIM)
        body = np.array([2], "<i8").tobytes() + good.tobytes()
        response = client.post(url_rows.format("t"), content=body, headers=headers)
        assert response.status_code == 200 and response.json()["sequence"] == 1
        assert np.array_equal(lookup(client, "t", [2]), good)


def _whole(rows: np.ndarray) -> float:
    """The one value every component of ``rows`` holds (the test's updates write one value)."""
    values = np.unique(rows)
    assert values.size == 1, f"a response holds part of an update: {values[:8]}"
    return float(values[0])


def _reader(url: str, ids: list[int], stop: threading.Event, seen: list[str]) -> None:
    """Checks each response is one update's rows, and never older than the last one."""
    with httpx.Client(base_url=url, timeout=30) as client:
        last = -1.0
        while not stop.is_set():
            try:
                value = _whole(lookup(client, "t", ids))
            except AssertionError as exc:
                seen.append(str(exc))
                return
            if value < last:
                seen.append(f"went back from {last} to {value}")
                return
            last = value


def test_a_response_never_holds_part_of_an_update_nor_goes_back(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    np.save(models / "t.npy", np.zeros((2 * ROWS, 128), np.float32))
    many = list(range(0, 2 * ROWS, 3))  # 2,731 rows x 128: answered in slices, past the cache
    few = list(range(1, 193, 3))  # beside them, never among them
    with start(models) as one, start(models) as two:
        stop, seen = threading.Event(), []
        readers = [
            threading.Thread(target=_reader, args=(url, ids, stop, seen))
            for url in (one.url, two.url)
            for ids in (many, many, few, few)
        ]
        for thread in readers:
            thread.start()
        try:
            for k in range(1, 13):
                url = one.url if k % 2 else two.url
                rows = np.full((len(many) + len(few), 128), float(k), np.float32)
                response = update(url, "t", many + few, rows)
                assert response.status_code == 200, response.text
            wait_served([one.url, two.url], "t", few, np.full((len(few), 128), 12.0))
        finally:
            stop.set()
            for thread in readers:
                thread.join()
        assert seen == []


def test_racing_writers_converge_to_the_higher_sequence(tmp_path: Path) -> None:
    models, _ = _repository(tmp_path)
    with start(models) as one, start(models) as two:
        answers: list[tuple[int, float]] = []

        def write(url: str, base: float) -> None:
            for n in range(10):
                value = base + n
                response = update(url, "t", [9], np.full((1, DIM), value))
                assert response.status_code == 200, response.text
                answers.append((response.json()["sequence"], value))

        writers = [
            threading.Thread(target=write, args=(url, base))
            for url, base in ((one.url, 100.0), (two.url, 200.0))
        ]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        sequences = sorted(sequence for sequence, _ in answers)
        assert sequences == list(range(1, 21))
        winner = max(answers)[1]
        wait_served([one.url, two.url], "t", [9], np.full((1, DIM), winner, np.float32))


def _offline(models: Path, tmp_path: Path, ids: list[int], value: float, update_id: str) -> dict:
    np.save(tmp_path / "ids.npy", np.array(ids))
    np.save(tmp_path / "rows.npy", np.full((len(ids), DIM), value, np.float32))
    command = [sys.executable, "-m", "service", "update", "t", "--models", str(models)]
    command += ["--ids", str(tmp_path / "ids.npy"), "--vectors", str(tmp_path / "rows.npy")]
    command += ["--update-id", update_id]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    summary: dict = json.loads(done.stdout)
    return summary


def test_the_offline_command_is_seen_by_running_servers(tmp_path: Path) -> None:
    models, _ = _repository(tmp_path)
    with start(models) as server:
        summary = _offline(models, tmp_path, [11, 12], 3.0, "train-1")
        assert summary["sequence"] == 1 and summary["rows"] == 2 and summary["applied"]
        wait_served([server.url], "t", [11, 12], np.full((2, DIM), 3.0, np.float32))
        assert summary["version"] == table_info(server.url, "t")["version"]
        again = _offline(models, tmp_path, [11, 12], 4.0, "train-1")
        assert again["sequence"] == 1 and not again["applied"]
