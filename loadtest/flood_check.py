"""A flood of large JSON lookups on an unbatched table: what the ids-in-flight budget admits,
what it costs in server memory, and how long ``/healthz`` waits meanwhile.

    PYTHONPATH=$PWD python loadtest/flood_check.py                 (the server's default budget)
    PYTHONPATH=$PWD python loadtest/flood_check.py --budget 0      (no limit)
    PYTHONPATH=$PWD python loadtest/flood_check.py --budget 100000 --clients 40 --ids 100000
    PYTHONPATH=$PWD python loadtest/flood_check.py --no-raw-asgi-front   (through FastAPI)

Starts one server (one worker) on a 200,000 x 64 float32 table with ``batching = false``,
opens ``--clients`` connections that each send one lookup of ``--ids`` random ids at once,
and reads every answer whole (no retries). Meanwhile a thread samples the server's RSS and
another asks ``/healthz`` again and again on its own connection. Prints admitted/refused
counts, the RSS peak over the idle server, the ``/healthz`` latencies seen during the flood,
and checks one admitted answer against the table. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, os.getcwd())
from tests.support.server_process import ServerProcess

ROWS, DIM = 200_000, 64
PATH = "/v1/tables/t/lookup"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=None, help="EMBED_MAX_IDS_IN_FLIGHT")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--ids", type=int, default=100_000)
    parser.add_argument(
        "--no-raw-asgi-front", action="store_true", help="EMBED_RAW_ASGI_FRONT=false"
    )
    return parser.parse_args()


def start_server(budget: int | None, raw_asgi_front: bool) -> tuple[ServerProcess, np.ndarray]:
    """One worker on a fresh 200,000 x 64 table, unbatched; ready and idle."""
    folder = Path(tempfile.mkdtemp(prefix="flood-check-")) / "models"
    folder.mkdir(parents=True)
    table = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32)
    np.save(folder / "t.npy", table)
    (folder / "t.toml").write_text("batching = false\n")
    env = {} if budget is None else {"EMBED_MAX_IDS_IN_FLIGHT": str(budget)}
    if not raw_asgi_front:
        env["EMBED_RAW_ASGI_FRONT"] = "false"
    server = ServerProcess(folder, env=env)
    server.wait_ready(120)
    time.sleep(1.0)  # let start-up settle before the baseline
    return server, table


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Runs ``probe`` in a loop until stopped, keeping what it returns."""

    def __init__(self, probe, pause: float) -> None:
        super().__init__(daemon=True)
        self.probe, self.pause = probe, pause
        self.values: list = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.values.append(self.probe())
            time.sleep(self.pause)

    def stop(self) -> list:
        self.done.set()
        self.join()
        return self.values


def healthz_probe(port: int):
    """Seconds one ``GET /healthz`` takes, on one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def probe() -> float:
        started = time.perf_counter()
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        return time.perf_counter() - started

    return probe


async def one_lookup(port: int, body: bytes, kept: dict[int, bytes], index: int) -> int:
    """Send one lookup on a new connection and read its answer whole; the status. The first
    200 body is kept in ``kept`` (the others are dropped: 40 of them are ~2.8 GB)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (PATH.encode(), len(body)) + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lines = head.lower().split(b"\r\n")
    left = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    parts = []
    while left:
        part = await reader.read(min(left, 1 << 20))
        if status == 200 and not kept:
            parts.append(part)
        left -= len(part)
    if parts and not kept:
        kept[index] = b"".join(parts)
    writer.close()
    return status


async def flood(port: int, bodies: list[bytes], kept: dict[int, bytes]) -> list[int]:
    return await asyncio.gather(*(one_lookup(port, b, kept, i) for i, b in enumerate(bodies)))


def check_one(kept: dict[int, bytes], ids: list[np.ndarray], table: np.ndarray) -> str:
    """Compare the admitted answer that was kept with the table."""
    for index, body in kept.items():
        vectors = np.array(orjson.loads(body)["vectors"], np.float32)
        return "exact" if np.array_equal(vectors, table[ids[index]]) else "WRONG"
    return "none admitted"


def report(
    statuses: list[int], seconds: float, rss: list[int], baseline: int, health: list[float]
) -> None:
    kinds = {status: statuses.count(status) for status in sorted(set(statuses))}
    print(
        f"answers by status: {kinds}  (admitted {kinds.get(200, 0)}, refused {kinds.get(503, 0)})"
    )
    print(f"flood took {seconds:.1f} s")
    print(
        f"server RSS idle {baseline / 2**20:.0f} MiB, peak +{(max(rss) - baseline) / 2**20:.0f} MiB"
    )
    if health:
        print(
            f"/healthz during the flood: {len(health)} probes, median {statistics.median(health) * 1000:.0f} ms, "
            f"max {max(health) * 1000:.0f} ms"
        )


def main() -> None:
    args = parse_args()
    server, table = start_server(args.budget, not args.no_raw_asgi_front)
    try:
        rng = np.random.default_rng(1)
        ids = [rng.integers(0, ROWS, args.ids) for _ in range(args.clients)]
        bodies = [orjson.dumps({"ids": request_ids.tolist()}) for request_ids in ids]
        baseline = rss_bytes(server.process.pid)
        rss = Sampler(lambda: rss_bytes(server.process.pid), 0.005)
        health = Sampler(healthz_probe(server.port), 0.01)
        rss.start()
        health.start()
        started = time.perf_counter()
        kept: dict[int, bytes] = {}
        statuses = asyncio.run(flood(server.port, bodies, kept))
        seconds = time.perf_counter() - started
        latencies, peaks = health.stop(), rss.stop()
        print(
            f"budget {args.budget if args.budget is not None else 'default'}, {args.clients} x {args.ids} ids"
        )
        report(statuses, seconds, peaks, baseline, latencies)
        print(f"one admitted answer vs the table: {check_one(kept, ids, table)}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
