"""Overload, deadlines and backend faults through real HTTP, with a slowed/failing backend."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import numpy as np

from tests.support.polling import until, wait_until
from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy

BATCHED = 'backend = "onnxruntime"\nbatching = true\n'


def metric(url: str, name: str, labels: str) -> float:
    text = httpx.get(url + "/metrics").text
    match = re.search(rf"^{re.escape(name)}\{{{labels}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_overload_rejects_fast_and_recovers(tmp_path: Path) -> None:
    """With the backend stalled (a gate only the test opens) and the queue full, every extra
    request is answered 503 and /healthz 200 while the stall lasts: rejection never waits for
    the backend. Ordering, not timing: the gate opens only after all of them came back."""
    folder = tmp_path / "models"
    table = random_table(100, 8)
    write_npy(folder, "slow", table, BATCHED)
    gate = tmp_path / "gate"
    entered = Path(f"{gate}.entered")
    env = {"EMBED_MAX_QUEUE_IDS": "4"}
    with ServerProcess(
        folder, "--gate", str(gate), env=env, module="tests.support.faulty_server"
    ) as server:
        server.wait_ready()

        def queued_ids() -> float:
            return metric(server.url, "embedding_queue_ids", 'table="slow"')

        async def scenario() -> tuple[list, float, list, list, bool]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                url = "/v1/tables/slow/lookup"
                busy = asyncio.ensure_future(http.post(url, json={"ids": [1]}))
                await until(entered.exists, "the first batch to reach the backend")
                queued = [
                    asyncio.ensure_future(http.post(url, json={"ids": [1, 2]})) for _ in range(2)
                ]
                await until(lambda: queued_ids() == 4, "4 ids queued (the limit)")
                rss_before = rss_mib(server.process.pid)
                rejected = [await http.post(url, json={"ids": [3]}) for _ in range(100)]
                health = [(await http.get("/healthz")).status_code for _ in range(20)]
                stalled = not busy.done() and not any(q.done() for q in queued)
                growth = rss_mib(server.process.pid) - rss_before
                gate.touch()  # release the backend
                done = await asyncio.gather(busy, *queued)
                return rejected, growth, health, done, stalled

        responses, growth, health, done, stalled = asyncio.run(scenario())
        assert stalled, "the stalled requests finished before the gate opened"
        assert all(r.status_code == 503 for r in responses)
        assert all(
            r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"]
            for r in responses
        )
        assert health == [200] * 20
        assert growth < 30, f"RSS grew {growth:.1f} MiB while rejecting"
        assert all(r.status_code == 200 for r in done)
        # Load dropped: service is back to normal.
        after = httpx.post(server.url + "/v1/tables/slow/lookup", json={"ids": [5, 6]}, timeout=60)
        assert after.status_code == 200
        np.testing.assert_array_equal(np.array(after.json()["vectors"], np.float32), table[[5, 6]])


def test_deadline_gives_504_and_is_not_computed(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_npy(folder, "slow", random_table(100, 8), BATCHED + "timeout_ms = 150\n")
    gate = tmp_path / "gate"
    entered = Path(f"{gate}.entered")
    with ServerProcess(folder, "--gate", str(gate), module="tests.support.faulty_server") as server:
        server.wait_ready()

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                first = asyncio.ensure_future(
                    http.post("/v1/tables/slow/lookup", json={"ids": [1]})
                )
                await until(entered.exists, "the first batch to reach the backend")
                # The backend stays stalled until the gate opens: this one can only time out.
                late = await http.post("/v1/tables/slow/lookup", json={"ids": [2]})
                gate.touch()
                return await first, late

        first, late = asyncio.run(scenario())
        assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"
        assert first.status_code == 504  # it too waited past its 150 ms for its result
        wait_until(
            lambda: metric(server.url, "embedding_backend_seconds_count", 'table="slow"') >= 1,
            "the stalled batch to finish",
        )
        assert (
            metric(server.url, "embedding_batcher_events_total", 'event="timed_out",table="slow"')
            >= 2
        )
        # A request after the stall is computed; the timed-out one never was: only two
        # backend calls in all (the first batch and this one).
        after = httpx.post(server.url + "/v1/tables/slow/lookup", json={"ids": [3]}, timeout=60)
        assert after.status_code == 200, after.text
        wait_until(
            lambda: metric(server.url, "embedding_backend_seconds_count", 'table="slow"') >= 2,
            "the next batch to be counted",
        )
        assert metric(server.url, "embedding_backend_seconds_count", 'table="slow"') == 2
        assert metric(server.url, "embedding_batch_ids_sum", 'table="slow"') == 2  # ids 1 and 3


def test_backend_fault_fails_only_its_batch(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    table = random_table(100, 8)
    write_npy(folder, "t", table, BATCHED)
    with ServerProcess(folder, "--fail-id", "13", module="tests.support.faulty_server") as server:
        server.wait_ready()
        bad = httpx.post(server.url + "/v1/tables/t/lookup", json={"ids": [1, 13]})
        assert bad.status_code == 500
        error = bad.json()["error"]
        assert error["code"] == "internal" and "injected" not in error["message"]
        request_id = error["detail"]["request_id"]
        good = httpx.post(server.url + "/v1/tables/t/lookup", json={"ids": [1, 2]})
        assert good.status_code == 200
        np.testing.assert_array_equal(np.array(good.json()["vectors"], np.float32), table[[1, 2]])
        assert httpx.get(server.url + "/readyz").json()["status"] == "ready"
        log = server.log()
        assert request_id in log and "injected fault on id 13" in log


def test_bad_table_files_fail_alone(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    good = random_table(20, 4)
    write_npy(folder, "good", good)
    write_npy(folder, "onedim", np.zeros(5, np.float32))
    write_npy(folder, "ints", np.zeros((3, 3), np.int64))
    np.save(folder / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "truncated.npy").write_bytes((folder / "good.npy").read_bytes()[:200])
    (folder / "garbage.npy").write_bytes(b"not numpy at all")
    (folder / "garbage_onnx.onnx").write_bytes(b"\x08\x07garbage")
    write_npy(folder, "badopts", good, "max_norm = -3\n")
    with ServerProcess(folder) as server:
        ready = server.wait_ready()
        response = httpx.get(server.url + "/readyz")
        assert response.status_code == 503 and ready["status"] == "degraded"
        failed = response.json()["failed"]
        assert set(failed) == {
            "onedim",
            "ints",
            "pickled",
            "truncated",
            "garbage",
            "garbage_onnx",
            "badopts",
        }
        for name, reason in failed.items():
            assert name in reason  # the file is named
        assert (
            "2-D" in failed["onedim"]
            and "dtype" in failed["ints"]
            and "max_norm" in failed["badopts"]
        )
        assert response.json()["tables"] == ["good"]
        ok = httpx.post(server.url + "/v1/tables/good/lookup", json={"ids": [3]})
        np.testing.assert_array_equal(np.array(ok.json()["vectors"], np.float32), good[[3]])
        # Failed is not missing: 503 table_unavailable with the load reason.
        failed_lookup = httpx.post(server.url + "/v1/tables/ints/lookup", json={"ids": [0]})
        assert failed_lookup.status_code == 503
        assert failed_lookup.json()["error"]["code"] == "table_unavailable"
        assert "dtype" in failed_lookup.json()["error"]["detail"]["reason"]
        assert "not an .npy file" in failed["garbage"] and "pickled" in failed["pickled"]
        assert "pickled" not in failed["garbage"]
