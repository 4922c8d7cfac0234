"""Several versions at once, labels and groups (API.md, "Versions" and "Groups"), end to end.

Real servers (``serve --workers 2``, and a second process on the same repository). Every
version's rows hold its version number, so each answer can be checked against its
``X-Table-Version``. Progress is polled with deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.support.polling import wait_until
from tests.support.server_process import ServerProcess, every_worker_serves, wait_for_workers

ROWS, DIM = 50, 4
DEADLINE = 60.0
POLL = {"EMBED_RELOAD_POLL_SECONDS": "0.1"}


def rows_of(version: float) -> np.ndarray:
    return np.full((ROWS, DIM), float(version), np.float32)


def publish(folder: Path, number: int, files: dict[str, float]) -> None:
    """A whole version folder: written hidden, then renamed in (the way to publish one)."""
    hidden = folder / f".{number}.tmp"
    hidden.mkdir(parents=True)
    for stem, value in files.items():
        np.save(hidden / f"{stem}.npy", rows_of(value))
    os.replace(hidden, folder / str(number))


def repository(root: Path) -> Path:
    models = root / "models"
    emb = models / "emb"
    emb.mkdir(parents=True)
    (emb / "table.toml").write_text("versions = {all = true}\n[labels]\nstable = 1\n")
    publish(emb, 1, {"emb": 1})
    publish(emb, 2, {"emb": 2})
    np.save(models / "flat.npy", rows_of(0.5))
    group = models / "tt"
    group.mkdir()
    (group / "group.toml").write_text("versions = {latest = 2}\n")
    publish(group, 7, {"user": 7, "item": 7})
    return models


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    models = repository(tmp_path_factory.mktemp("versions"))
    run = models.parent / "run"
    with ServerProcess(models, "--workers", "2", env={**POLL, "EMBED_RUN_DIR": str(run)}) as server:
        serving(server, run, 2)
        yield server, models


def serving(server: ServerProcess, run: Path, workers: int) -> None:
    """Ready, and every worker serves the versioned table and the group (a worker still
    loading answers 503 with Retry-After: never a flip's doing)."""
    server.wait_ready(DEADLINE)
    for table in ("emb", "tt.user"):
        wait_for_workers(server, run, every_worker_serves(table, workers), DEADLINE)


def lookup(url: str, table: str, version: str | None = None, **kw: object) -> httpx.Response:
    params = {"version": version} if version is not None else {}
    return httpx.post(f"{url}/v1/tables/{table}/lookup", params=params, timeout=10, **kw)  # type: ignore[arg-type]


def value_of(response: httpx.Response) -> float:
    """The one value every row of the answer holds (each version's rows are its number)."""
    vectors = np.asarray(response.json()["vectors"], np.float32)
    assert np.unique(vectors).size == 1, vectors
    return float(vectors.flat[0])


def test_pinned_and_unpinned_lookups_name_their_version(served: tuple[ServerProcess, Path]) -> None:
    server, _ = served
    unpinned = lookup(server.url, "emb", json={"ids": [1, 2]})
    assert unpinned.status_code == 200
    assert unpinned.headers["x-table-version"] == "2" and value_of(unpinned) == 2
    for version, value in (("1", 1), ("2", 2), ("stable", 1)):
        response = lookup(server.url, "emb", version, json={"ids": [[1], [3]]})
        assert response.headers["x-table-version"] == str(value)
        assert value_of(response) == value
    binary = lookup(
        server.url,
        "emb",
        "1",
        content=np.array([1, 2], "<i8").tobytes(),
        headers={"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"},
    )
    assert binary.headers["x-table-version"] == "1"
    assert np.frombuffer(binary.content, "<f4").tolist() == [1.0] * 2 * DIM
    b64 = lookup(server.url, "emb", "1", json={"ids": [1], "encoding": "base64"})
    assert np.frombuffer(base64.b64decode(b64.json()["vectors"]), "<f4").tolist() == [1.0] * DIM
    for word, body in (("sequences", {"sequences": [[1, 2]]}), ("bags", {"bags": [[1, 2]]})):
        response = httpx.post(
            f"{server.url}/v1/tables/emb/{word}", params={"version": "1"}, json=body
        )
        assert response.headers["x-table-version"] == "1", response.text
    neighbors = httpx.post(
        f"{server.url}/v1/tables/emb/neighbors", params={"version": "1"}, json={"ids": [1], "k": 2}
    )
    assert neighbors.status_code == 200 and neighbors.headers["x-table-version"] == "1"
    ready = httpx.get(f"{server.url}/v2/models/emb/versions/stable/ready")
    assert ready.status_code == 200 and ready.headers["x-table-version"] == "1"
    flat = lookup(server.url, "flat", json={"ids": [0]})
    assert (
        flat.headers["x-table-version"]
        == httpx.get(f"{server.url}/v1/tables/flat").json()["version"]
    )


def test_unknown_versions_are_404_naming_what_is_served(served: tuple[ServerProcess, Path]) -> None:
    server, _ = served
    for version in ("3", "canary"):
        response = lookup(server.url, "emb", version, json={"ids": [1]})
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "version_not_found"
        assert error["detail"]["versions"] == ["1", "2"]
        assert error["detail"]["labels"] == {"stable": "1"}
    info = httpx.get(f"{server.url}/v1/tables/emb").json()
    assert (info["version"], info["versions"], info["labels"]) == ("2", ["1", "2"], {"stable": "1"})
    pinned = httpx.get(f"{server.url}/v1/tables/emb", params={"version": "stable"})
    assert pinned.headers["x-table-version"] == "1"


def test_v2_and_openai_pin_versions(served: tuple[ServerProcess, Path]) -> None:
    server, _ = served
    body = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2], "data": [1, 2]}]}
    for path, value in (("/v2/models/emb/versions/1/infer", 1), ("/v2/models/emb/infer", 2)):
        response = httpx.post(server.url + path, json=body)
        assert response.status_code == 200, response.text
        assert response.headers["x-table-version"] == str(value)
        assert set(response.json()["outputs"][0]["data"]) == {value}
        assert response.json()["model_version"] == str(value)
    assert httpx.get(f"{server.url}/v2/models/emb").json()["versions"] == ["1", "2"]
    missing = httpx.post(f"{server.url}/v2/models/emb/versions/9/infer", json=body)
    assert missing.status_code == 404 and "error" in missing.json()
    openai = httpx.post(f"{server.url}/v1/embeddings", json={"model": "emb@stable", "input": [1]})
    assert openai.status_code == 200 and openai.headers["x-table-version"] == "1"
    assert set(openai.json()["data"][0]["embedding"]) == {1.0}


def test_group_lookup_answers_every_member_at_one_version(
    served: tuple[ServerProcess, Path],
) -> None:
    server, _ = served
    body = {"tables": {"user": {"ids": [1, 2]}, "item": {"ids": [[3]]}}}
    response = httpx.post(f"{server.url}/v1/groups/tt/lookup", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["group"] == "tt" and answer["version"] == "7"
    assert response.headers["x-table-version"] == "7"
    assert answer["tables"]["item"]["shape"] == [1, 1, DIM]
    assert {v for row in answer["tables"]["user"]["vectors"] for v in row} == {7.0}
    info = httpx.get(f"{server.url}/v1/groups/tt").json()
    assert info == {
        "name": "tt",
        "tables": ["tt.item", "tt.user"],
        "versions": ["7"],
        "labels": {},
        "version": "7",
    }
    assert httpx.get(f"{server.url}/v1/groups").json()["groups"] == [info]
    member = lookup(server.url, "tt.user", json={"ids": [0]})
    assert member.headers["x-table-version"] == "7" and value_of(member) == 7
    bad = httpx.post(f"{server.url}/v1/groups/tt/lookup", json={"tables": {"nope": {"ids": [1]}}})
    assert bad.status_code == 422 and bad.json()["error"]["detail"]["table"] == "nope"
    out = httpx.post(f"{server.url}/v1/groups/tt/lookup", json={"tables": {"user": {"ids": [99]}}})
    assert out.status_code == 422 and out.json()["error"]["detail"]["table"] == "user"
    assert httpx.get(f"{server.url}/v1/groups/none").status_code == 404


def _hammer(url: str, stop: threading.Event, seen: list[str], errors: list[str]) -> None:
    """Lookups (table and group) until ``stop``: every answer's rows match its version."""
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            response = client.post(f"{url}/v1/tables/emb/lookup", json={"ids": [1, 2, 3]})
            if response.status_code != 200:
                errors.append(f"{response.status_code} {response.text}")
                continue
            version = response.headers["x-table-version"]
            if value_of(response) != float(version):
                errors.append(f"rows of {value_of(response)} under version {version}")
            seen.append(version)
            group = client.post(
                f"{url}/v1/groups/tt/lookup",
                json={"tables": {"user": {"ids": [1]}, "item": {"ids": [2]}}},
            )
            if group.status_code != 200:
                errors.append(f"group {group.status_code} {group.text}")
                continue
            answer = group.json()
            values = {v for t in answer["tables"].values() for row in t["vectors"] for v in row}
            if values != {float(answer["version"])}:
                errors.append(f"group version {answer['version']} answered {values}")


def test_flips_under_load_never_mix_and_reach_a_second_process(tmp_path: Path) -> None:
    models = repository(tmp_path)
    runs = [tmp_path / "run1", tmp_path / "run2"]
    with (
        ServerProcess(
            models, "--workers", "2", env={**POLL, "EMBED_RUN_DIR": str(runs[0])}
        ) as first,
        ServerProcess(
            models, "--workers", "1", env={**POLL, "EMBED_RUN_DIR": str(runs[1])}
        ) as second,
    ):
        for server, run, workers in ((first, runs[0], 2), (second, runs[1], 1)):
            serving(server, run, workers)
        stop, seen, errors = threading.Event(), [], []  # type: ignore[var-annotated]
        threads = [
            threading.Thread(target=_hammer, args=(server.url, stop, seen, errors))
            for server in (first, first, second)
        ]
        for thread in threads:
            thread.start()
        try:
            emb = models / "emb"
            publish(emb, 3, {"emb": 3})  # added: the new default
            for server in (first, second):
                wait_until(lambda s=server: _default(s) == "3", "version 3 served", DEADLINE)
            (emb / "table.toml").write_text("versions = {all = true}\n[labels]\nstable = 2\n")
            wait_until(lambda: _label(first, "stable") == "2", "stable moved to 2", DEADLINE)
            shutil.rmtree(emb / "3")  # removed: back to 2
            for server in (first, second):
                wait_until(lambda s=server: _default(s) == "2", "version 3 gone", DEADLINE)
            # A group version arriving member by member: not served until whole.
            group = models / "tt"
            (group / "8").mkdir()
            np.save(group / "8" / "user.npy", rows_of(8))
            wait_until(lambda: "tt/8" in _failed(first), "tt/8 named incomplete", DEADLINE)
            assert _group_default(first) == "7"
            np.save(group / "8" / "item.npy", rows_of(8))
            for server in (first, second):
                wait_until(lambda s=server: _group_default(s) == "8", "group at 8", DEADLINE)
            publish(group, 9, {"user": 9, "item": 9})
            wait_until(lambda: _group_default(first) == "9", "group at 9", DEADLINE)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert errors == []
        assert {"2", "3"} <= set(seen)


def test_a_broken_version_is_held_back_and_named_while_ready(tmp_path: Path) -> None:
    models = repository(tmp_path)
    run = tmp_path / "run"
    with ServerProcess(models, "--workers", "2", env={**POLL, "EMBED_RUN_DIR": str(run)}) as server:
        serving(server, run, 2)
        broken = models / "tt" / ".8.tmp"
        broken.mkdir()
        np.save(broken / "user.npy", rows_of(8))
        (broken / "item.npy").write_bytes(b"not an npy file")
        os.replace(broken, models / "tt" / "8")
        wait_until(lambda: "tt/8" in _failed(server), "tt/8 held back", DEADLINE)
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert _group_default(server) == "7"
        (models / "emb" / "table.toml").write_text("versions = {all = true}\n[labels]\nx = 9\n")
        wait_until(lambda: "emb@x" in _failed(server), "label x named", DEADLINE)
        assert httpx.get(f"{server.url}/readyz").status_code == 200


def _default(server: ServerProcess) -> str:
    return str(lookup(server.url, "emb", json={"ids": [0]}).headers.get("x-table-version"))


def _label(server: ServerProcess, label: str) -> str:
    return str(lookup(server.url, "emb", label, json={"ids": [0]}).headers.get("x-table-version"))


def _group_default(server: ServerProcess) -> str:
    return str(httpx.get(f"{server.url}/v1/groups/tt").json().get("version"))


def _failed(server: ServerProcess) -> dict[str, str]:
    return dict(orjson.loads(httpx.get(f"{server.url}/readyz").content).get("failed", {}))
