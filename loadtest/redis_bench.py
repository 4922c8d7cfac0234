#!/usr/bin/env python3
"""Redis-table benchmarks (not a test): push time, hot-row hit rate, W2/W3 against baselines.

    PYTHONPATH=. .venv/bin/python loadtest/redis_bench.py [--rows 1000000] [--dim 128]

Starts a local 3-master + 3-replica cluster, pushes a ROWS x DIM float32 table,
then serves it (and the same table from .npy) and reports, all within one run:

- push wall time (``embedding-service push``, a fresh process);
- Zipf(1.1) hit rate of the hot-row cache with cache_rows = 10% of the rows;
- W2 (binary, 32 Zipf ids/request): vectors per server CPU-second, Redis table vs .npy;
- W3 (binary, 1,024 uniform ids/request, cache_rows = 0): vectors/s through HTTP vs a
  bare client doing the same per-tag MGETs in-process (no HTTP);
- RSS growth of the Redis-table server under W2 vs cache bytes x 1.5 + 64 MiB.

Server CPU = utime + stime (+ children) from /proc/<pid>/stat. The machine is shared:
compare the ratios within one run, not the absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.bench import Case, run_wrk  # noqa: E402
from service.backends.redis_store import RedisLayout, RowReader, connect, read_meta  # noqa: E402
from service.caches.hot_rows import HotRowCache  # noqa: E402
from service.redis_local import RedisCluster, free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SERVE = (sys.executable, "-m", "service", "serve")
LOOKUP = "/v1/tables/big/lookup"


def binary_case(workload: str, connections: int) -> Case:
    """A binary lookup of table ``big`` as loadtest/bench.py runs it."""
    return Case("service", LOOKUP, workload, "binary", connections)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS  # utime stime cutime cstime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def zipf_ids(rows: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = np.arange(1, rows + 1, dtype=np.float64) ** -1.1
    return rng.permutation(rows)[rng.choice(rows, count, p=weights / weights.sum())]


def hit_rate(rows: int, dim: int) -> float:
    ids = zipf_ids(rows, 2_000_000, 1)
    cache = HotRowCache(rows // 10, dim, np.dtype(np.float32))
    zeros = np.zeros((rows, dim), np.float32)[:1]
    for n, batch in enumerate(np.split(ids, 2000)):
        if n == 500:  # first quarter warms the cache
            cache.hits = cache.misses = 0
        missing = np.unique(batch[cache.lookup(batch.tolist()) < 0])
        cache.store(missing.tolist(), np.broadcast_to(zeros, (missing.size, dim)))
    return cache.hits / (cache.hits + cache.misses)


class Server:
    def __init__(self, models: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
        env["PYTHONPATH"] = str(ROOT)
        self.process = subprocess.Popen(
            [*SERVE, "--models", str(models), "--port", str(self.port), "--log-level", "warning"],
            env=env,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server on {models} not ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def bodies_file(folder: Path, label: str, batches: list[np.ndarray]) -> Path:
    """wrk's request bodies: one hex line of little-endian int64 ids per request."""
    path = folder / f"bodies_{label}.txt"
    path.write_text("\n".join(b.astype("<i8").tobytes().hex() for b in batches) + "\n")
    return path


def measure(server: Server, bodies: Path, case: Case, ids: int, seconds: float) -> dict:
    """wrk (a C client: never the bottleneck) against the server; its CPU and RSS."""
    cpu0 = cpu_seconds(server.process.pid)
    result = run_wrk(server.port, case, bodies, seconds, None)
    cpu = cpu_seconds(server.process.pid) - cpu0
    assert result["errors"] == 0, result
    vectors = result["requests"] * ids
    return {
        "vectors_per_cpu_s": vectors / cpu,
        "vectors_per_s": vectors / (result["duration_us"] / 1e6),
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "rss_mib": rss_bytes(server.process.pid) / 2**20,
    }


async def bare_mgets(url: str, name: str, batches: list[np.ndarray], concurrency: int) -> float:
    """The same per-tag MGETs as the service, in-process, no HTTP: vectors/s."""
    client = await connect(url, 5.0)
    layout = RedisLayout(name)
    version = (await client.get(layout.pointer)).decode()
    meta = await read_meta(client, layout, version, url)
    assert meta is not None
    reader = RowReader(client, layout, meta)
    queue = list(reversed(batches))

    async def worker() -> None:
        while queue:
            ids = queue.pop()
            await reader.read(np.unique(ids), 5.0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    await client.aclose()
    return sum(b.size for b in batches) / wall


def push_and_report(cluster: RedisCluster, table_file: Path, rows: int, dim: int) -> None:
    """Push the table with the CLI; print its wall time, client and server CPU, and memory."""
    redis_cpu0 = sum(cpu_seconds(n.process.pid) for n in cluster.nodes if n.process)
    children0 = os.times()
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "service", "push", str(table_file), "--redis", cluster.url]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    push_s = time.perf_counter() - started
    children = os.times()
    push_cpu = (children.children_user - children0.children_user) + (
        children.children_system - children0.children_system
    )
    redis_cpu = sum(cpu_seconds(n.process.pid) for n in cluster.nodes if n.process) - redis_cpu0
    print(
        f"push CPU: client {push_cpu:.1f} s, 6 redis-servers {redis_cpu:.1f} s "
        f"(on {os.cpu_count()} cores shared with others)",
        flush=True,
    )
    used = sum(int(m.client().info("memory")["used_memory"]) for m in cluster.masters())
    print(
        f"push {rows} x {dim} float32: {push_s:.1f} s; masters' used_memory {used / 2**20:.0f} MiB "
        f"({used / rows:.0f} B/row)",
        flush=True,
    )


def serve_and_measure(
    work: Path, cluster_url: str, rows: int, seconds: float, servers: list[Server]
) -> tuple[dict[str, dict], float, list[np.ndarray]]:
    """The three HTTP runs (npy W2, redis W2 with a 10% cache, redis W3 uncached)."""
    local, remote, cold = (work / n for n in ("local", "remote", "cold"))
    for folder in (local, remote, cold):
        folder.mkdir()
    os.link(work / "big.npy", local / "big.npy")
    (remote / "big.toml").write_text(f'redis = "{cluster_url}"\ncache_rows = {rows // 10}\n')
    (cold / "big.toml").write_text(f'redis = "{cluster_url}"\ncache_rows = 0\n')
    w2 = np.split(zipf_ids(rows, 32 * 5000, 2).astype(np.int64), 5000)
    w3 = [np.random.default_rng(3).integers(0, rows, 1024) for _ in range(200)]
    w2_bodies, w3_bodies = bodies_file(work, "W2", w2), bodies_file(work, "W3", w3)
    figures, idle_mib = {}, 0.0
    runs = (
        ("npy W2", local, w2_bodies, 32, binary_case("W2", 64)),
        ("redis W2", remote, w2_bodies, 32, binary_case("W2", 64)),
        ("redis W3", cold, w3_bodies, 1024, binary_case("W3", 16)),
    )
    for label, folder, bodies, ids, case in runs:
        server = Server(folder)
        servers.append(server)
        if label == "redis W2":
            idle_mib = rss_bytes(server.process.pid) / 2**20
        # Warm-up (for the Redis table: the hot-row cache fills with Zipf traffic).
        run_wrk(server.port, case, bodies, seconds, None)
        figures[label] = measure(server, bodies, case, ids, seconds)
        print(label, {k: round(v, 1) for k, v in figures[label].items()}, flush=True)
        server.stop()
    return figures, idle_mib, w3


def report(figures: dict[str, dict], idle_mib: float, bare: float, rows: int, dim: int) -> None:
    """The ratios against their targets, and the RSS growth against its bound."""
    ratio_w2 = figures["redis W2"]["vectors_per_cpu_s"] / figures["npy W2"]["vectors_per_cpu_s"]
    ratio_w3 = figures["redis W3"]["vectors_per_s"] / bare
    bound = rows // 10 * dim * 4 * 1.5 + 64 * 2**20
    print(f"W2 vectors per server CPU-s, redis / npy: {ratio_w2:.2f} (target >= 0.7)")
    print(
        f"W3 cache_rows=0 vectors/s: http {figures['redis W3']['vectors_per_s']:.0f}, "
        f"bare MGETs {bare:.0f}, ratio {ratio_w3:.2f} (target >= 0.5)"
    )
    growth = figures["redis W2"]["rss_mib"] - idle_mib
    print(
        f"RSS growth under W2 over the idle service: {growth:.0f} MiB (bound {bound / 2**20:.0f} MiB)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=10.0, help="of wrk load per row")
    parser.add_argument("--concurrency", type=int, default=16, help="bare client's MGETs in flight")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="redis-bench-"))
    (ROOT / "bench_data").mkdir(exist_ok=True)  # where loadtest/bench.py keeps wrk's script
    rows, dim = args.rows, args.dim
    table = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    np.save(work / "big.npy", table)
    del table
    cluster = RedisCluster(work / "redis")
    servers: list[Server] = []
    try:
        push_and_report(cluster, work / "big.npy", rows, dim)
        print(f"Zipf(1.1) hit rate, cache_rows = 10%: {hit_rate(rows, dim):.3f}", flush=True)
        figures, idle_mib, w3 = serve_and_measure(work, cluster.url, rows, args.seconds, servers)
        bare = asyncio.run(bare_mgets(cluster.url, "big", w3, args.concurrency))
        report(figures, idle_mib, bare, rows, dim)
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
