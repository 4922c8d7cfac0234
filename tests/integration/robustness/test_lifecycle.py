"""Graceful shutdown under load, and hot reload under load: nothing half-answered, nothing mixed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.support.polling import until, wait_until
from tests.support.raw_http import RawConnection
from tests.support.server_process import ServerProcess, every_worker_serves, wait_for_workers

ROWS, DIM = 200, 8


def version_table(version: int) -> np.ndarray:
    """Every value of every row is the version number: a response shows which version made it."""
    return np.full((ROWS, DIM), float(version), dtype=np.float32)


def write_version(folder: Path, version: int, options: str) -> None:
    tmp = folder / ".next.npy"
    np.save(tmp, version_table(version))
    os.replace(tmp, folder / "t.npy")  # atomic: readers see the old or the new file
    (folder / "t.toml").write_text(options)


@pytest.mark.parametrize(
    ("options", "workers"),
    [("", "1"), ('backend = "onnxruntime"\nbatching = true\n', "1"), ("", "2")],
    ids=["numpy", "ort-batched", "numpy-2-workers"],
)
def test_reload_under_load_serves_whole_versions(
    tmp_path: Path, options: str, workers: str
) -> None:
    folder, run_dir = tmp_path / "models", tmp_path / "run"
    folder.mkdir()
    write_version(folder, 1, options)
    env = {"EMBED_ADMIN_KEY": "adm", "EMBED_RUN_DIR": str(run_dir)}
    with ServerProcess(folder, "--workers", workers, env=env) as server:
        server.wait_ready()  # one worker's answer: the load below reaches every worker
        wait_for_workers(server, run_dir, every_worker_serves("t", int(workers)))
        stop = False
        seen: dict[float, int] = {}
        errors: list[str] = []

        async def load() -> None:
            connection = RawConnection("127.0.0.1", server.port)
            ids = orjson.dumps({"ids": list(range(0, ROWS, 7))})
            while not stop:
                status, _, body = await connection.post("/v1/tables/t/lookup", ids)
                if status != 200:
                    errors.append(f"{status} {body[:200]!r}")
                    continue
                values = np.unique(np.array(orjson.loads(body)["vectors"], dtype=np.float32))
                if values.size != 1:
                    errors.append(f"a response mixes versions {values.tolist()}")
                else:
                    seen[float(values[0])] = seen.get(float(values[0]), 0) + 1

        async def reloads() -> list[str]:
            nonlocal stop
            versions = []
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                await served(1.0)
                for version in range(2, 12):
                    await asyncio.to_thread(write_version, folder, version, options)
                    response = await http.post(
                        "/v1/admin/tables/t/reload", headers={"Authorization": "Bearer adm"}
                    )
                    assert response.status_code == 200, response.text
                    versions.append(response.json()["version"])
                    await served(float(version))  # the load saw it before the next reload
            stop = True
            return versions

        async def served(value: float) -> None:
            # Ordering, not timing: wait until a response carried ``value`` (or one failed).
            await until(lambda: value in seen or bool(errors), f"a response of version {value}")

        async def run() -> list[str]:
            workers = [asyncio.ensure_future(load()) for _ in range(16)]
            versions = await reloads()
            await asyncio.gather(*workers)
            return versions

        versions = asyncio.run(run())
        assert not errors, errors[:5]
        assert len(set(versions)) == 10  # TableInfo.version changed on every reload
        assert sorted(seen) == [float(v) for v in range(1, 12)], seen
        final = httpx.post(server.url + "/v1/tables/t/lookup", json={"ids": [0]}).json()
        assert final["vectors"] == [[11.0] * DIM]


def test_sighup_reloads(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    write_version(folder, 1, "")
    with ServerProcess(folder) as server:
        server.wait_ready()
        before = httpx.get(server.url + "/v1/tables/t").json()["version"]
        write_version(folder, 2, "")
        os.kill(server.process.pid, signal.SIGHUP)
        wait_until(
            lambda: httpx.get(server.url + "/v1/tables/t").json()["version"] != before,
            "SIGHUP to reload the table",
        )
        assert httpx.post(server.url + "/v1/tables/t/lookup", json={"ids": [3]}).json()[
            "vectors"
        ] == [[2.0] * DIM]


def test_reload_failure_keeps_old_version(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    write_version(folder, 1, "")
    with ServerProcess(folder, env={"EMBED_ADMIN_KEY": "adm"}) as server:
        server.wait_ready()
        (folder / ".broken").write_bytes(b"broken")
        os.replace(folder / ".broken", folder / "t.npy")  # deployed atomically, as documented
        response = httpx.post(
            server.url + "/v1/admin/tables/t/reload", headers={"Authorization": "Bearer adm"}
        )
        assert response.status_code == 409 and response.json()["error"]["code"] == "reload_failed"
        assert httpx.post(server.url + "/v1/tables/t/lookup", json={"ids": [0]}).json()[
            "vectors"
        ] == [[1.0] * DIM]


def test_sigterm_mid_load_finishes_accepted_requests(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    table = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32)
    np.save(folder / "t.npy", table)
    (folder / "t.toml").write_text('backend = "onnxruntime"\nbatching = true\n')
    with ServerProcess(folder) as server:
        server.wait_ready()
        outcome = {"complete": 0, "wrong": 0, "refused": 0, "cut": 0}

        async def load(seed: int) -> None:
            rng = np.random.default_rng(seed)
            connection = RawConnection("127.0.0.1", server.port)
            while True:
                ids = rng.integers(0, ROWS, size=16)
                try:
                    await connection.send(
                        "/v1/tables/t/lookup", orjson.dumps({"ids": ids.tolist()})
                    )
                except OSError:
                    outcome["refused"] += 1  # not accepted: the server no longer listens
                    return
                try:
                    status, _, body = await connection.receive()
                except asyncio.IncompleteReadError as exc:
                    # Closed with nothing sent back: the request was never read (keep-alive close).
                    outcome["cut" if exc.partial else "refused"] += 1
                    return
                except OSError:
                    outcome["refused"] += 1
                    return
                vectors = (
                    np.array(orjson.loads(body)["vectors"], np.float32) if status == 200 else None
                )
                if vectors is not None and np.array_equal(vectors, table[ids]):
                    outcome["complete"] += 1
                else:
                    outcome["wrong"] += 1

        async def run() -> None:
            workers = [asyncio.ensure_future(load(i)) for i in range(32)]
            # Signal mid-load: once 100 requests completed (counted, not timed).
            await until(lambda: outcome["complete"] >= 100, f"100 completed requests ({outcome})")
            server.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*workers), 60)

        asyncio.run(run())
        # The drain itself is bounded by EMBED_DRAIN_SECONDS (8 s, under Docker's 10 s) inside
        # the server; here a generous deadline only keeps a hung server from hanging the suite.
        exit_code = server.process.wait(60)
        assert exit_code == 0, server.log()
        assert outcome["complete"] >= 100
        assert outcome["wrong"] == 0 and outcome["cut"] == 0, outcome


def test_ctrl_c_stops_quietly(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C in a terminal) drains and exits 0 with no traceback."""
    folder = tmp_path / "models"
    folder.mkdir()
    write_version(folder, 1, "")
    with ServerProcess(folder) as server:
        server.wait_ready()
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(60) == 0, server.log()
        assert "Traceback" not in server.log() and "KeyboardInterrupt" not in server.log()


def test_missing_models_folder_fails_start_up_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "mistyped"
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--models", str(missing), "--port", "9"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"embedding-service: --models {missing}: no such folder (create it, or point at the tables)"
    ]
    assert not missing.exists()
