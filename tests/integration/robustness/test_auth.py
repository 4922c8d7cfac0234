"""Optional API keys: /v1 needs a Bearer key, health stays open, keys never reach the log."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy

KEYS = ("alpha-key-0123456789", "beta-key-9876543210")
FILE_KEY = "gamma-from-file-555"


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> ServerProcess:
    folder = tmp_path_factory.mktemp("auth") / "models"
    write_npy(folder, "t", random_table(10, 4))
    keys_file = folder.parent / "keys.txt"
    keys_file.write_text(f"# one per line\n{FILE_KEY}\n\n")
    env = {
        "EMBED_API_KEYS": ",".join(KEYS),
        "EMBED_API_KEYS_FILE": str(keys_file),
        "EMBED_ADMIN_KEY": "admin-secret-42",
    }
    with ServerProcess(folder, "--log-level", "debug", "--access-log", env=env) as server:
        server.wait_ready()
        yield server


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic " + KEYS[0], "Bearer", KEYS[0]])
def test_missing_or_wrong_key_is_401(secured, header) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in (
        ("POST", "/v1/tables/t/lookup"),
        ("GET", "/v1/tables"),
        ("GET", "/v1/tables/t"),
    ):
        response = httpx.request(method, secured.url + path, json={"ids": [1]}, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("key", [*KEYS, FILE_KEY])
def test_valid_keys_pass(secured, key) -> None:
    response = httpx.post(
        secured.url + "/v1/tables/t/lookup",
        json={"ids": [1]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200


def test_health_and_metrics_stay_open(secured) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(secured.url + path).status_code == 200


def test_admin_reload_needs_the_admin_key(secured) -> None:
    url = secured.url + "/v1/admin/tables/t/reload"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"Authorization": f"Bearer {KEYS[0]}"}).status_code == 401
    ok = httpx.post(url, headers={"Authorization": "Bearer admin-secret-42"})
    assert ok.status_code == 200 and ok.json()["name"] == "t"


def test_keys_never_logged(secured) -> None:
    httpx.post(
        secured.url + "/v1/tables/t/lookup",
        json={"ids": [1]},
        headers={"Authorization": f"Bearer {KEYS[1]}"},
    )
    log = secured.log()
    assert log  # debug logging and the access log are on
    for secret in (*KEYS, FILE_KEY, "admin-secret-42"):
        assert secret not in log


def test_without_keys_everything_is_open(server) -> None:
    assert httpx.get(server.url + "/v1/tables").status_code == 200
    admin = httpx.post(server.url + "/v1/admin/tables/plain/reload")
    assert admin.status_code == 404  # admin routes exist only with an admin key


def test_health_can_be_protected(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_npy(folder, "t", random_table(10, 4))
    env = {"EMBED_API_KEYS": "k1", "EMBED_AUTH_HEALTH": "true"}
    with ServerProcess(folder, env=env) as server:
        server.wait_ready(headers={"Authorization": "Bearer k1"})
        assert httpx.get(server.url + "/healthz").status_code == 401
