"""Worker-process benchmark: 2 workers against 1, and table warm-up against none.

    PYTHONPATH=$PWD python loadtest/workers_bench.py [--duration 10] [--rows 2100000] [--dim 128]

1. Throughput: W2 (32 random ids per request, binary in and out, 64 connections) with wrk
   against ``serve --workers 1`` and ``--workers 2`` on one table (2,100,000 x 128 float32,
   1.0 GiB): wall requests/s and vectors/s, and vectors per server CPU-second (utime+stime
   of the server's whole process tree from /proc, before and after the run).
2. Memory: RSS and PSS (shared pages split between the processes that map them) of the
   process tree with the table fully resident (``EMBED_WARM_UP=true``), 1 worker against 2.
3. Warm-up: p50/p99/max of the first 1,000 requests (W2, one connection, sequential) after
   a start on a freshly written table evicted from the page cache (fsync, then
   posix_fadvise(DONTNEED): no root needed), with ``EMBED_WARM_UP`` false and true.

wrk and the server share this machine's cores (no pinning: pinning the server to one core
would defeat its second worker). Asserts nothing; prints Markdown for docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtest.bench import DATA, bench_repository, make_table, run_wrk, write_bodies

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            todo += [int(child) for child in task.read_text().split()]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (and their reaped children) in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def memory_mib(pids: list[int]) -> tuple[float, float]:
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


class Service:
    """``serve`` over one table, ready when every worker has published its state."""

    def __init__(self, table: Path, workers: int, warm_up: bool) -> None:
        self.repo = bench_repository(table, "workers-bench-")
        self.workers, self.port = workers, free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "EMBED_WARM_UP": str(warm_up).lower(),
                "EMBED_RUN_DIR": str(self.repo / "run"),
                "EMBED_LOG_LEVEL": "warning",
            }
        )
        self.started = time.perf_counter()
        command = [sys.executable, "-m", "service", "serve", "--models", str(self.repo)]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), "--workers", str(workers)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ready_seconds = self._wait_ready()

    def _wait_ready(self) -> float:
        deadline = time.monotonic() + 600
        workers = self.repo / "run" / "workers"
        while time.monotonic() < deadline:
            if workers.is_dir() and len(list(workers.glob("*.json"))) == self.workers:
                try:
                    if httpx.get(f"http://127.0.0.1:{self.port}/readyz").status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("server not ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(120)
        shutil.rmtree(self.repo, ignore_errors=True)


def throughput(table: Path, rows: int, workers: int, seconds: float) -> dict[str, float]:
    service = Service(table, workers, warm_up=True)
    try:
        bodies = write_bodies("W2", rows, "binary")
        run_wrk(service.port, "/v1/tables/big/lookup", bodies, "binary", 64, 2, None)  # warm
        pids = process_tree(service.process.pid)
        cpu_before = cpu_seconds(pids)
        result = run_wrk(service.port, "/v1/tables/big/lookup", bodies, "binary", 64, seconds, None)
        cpu = cpu_seconds(process_tree(service.process.pid)) - cpu_before
        rss, pss = memory_mib(process_tree(service.process.pid))
        vectors = result["requests"] * 32
        return {
            "rps": result["rps"],
            "vectors_per_s": vectors / (result["duration_us"] / 1e6),
            "vectors_per_cpu_s": vectors / cpu,
            "cpu_s": cpu,
            "p99_ms": result["p99_us"] / 1000,
            "errors": result["errors"],
            "rss": rss,
            "pss": pss,
        }
    finally:
        service.stop()


def write_cold_table(rows: int, dim: int) -> Path:
    """A freshly written table, then dropped from the page cache."""
    DATA.mkdir(exist_ok=True)
    path = DATA / f"cold_{rows}x{dim}.npy"
    table = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    rng = np.random.default_rng(7)
    for start in range(0, rows, 100_000):
        stop = min(rows, start + 100_000)
        table[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    table.flush()
    del table
    evict(path)
    return path


def evict(path: Path) -> str:
    """Drop ``path`` from the page cache; what fincore says is still resident."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if shutil.which("fincore"):
        out = subprocess.run(
            ["fincore", "-b", "-n", "-o", "RES", str(path)], capture_output=True, text=True
        )
        return out.stdout.strip()
    return "?"


async def first_requests(port: int, rows: int, count: int) -> list[float]:
    rng = np.random.default_rng(3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies = []
    for _ in range(count):
        body = rng.integers(0, rows, 32).astype("<i8").tobytes()
        started = time.perf_counter()
        writer.write(
            b"POST /v1/tables/big/lookup HTTP/1.1\r\nHost: b\r\nContent-Type: application/octet-stream\r\n"
            b"Accept: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
    writer.close()
    return latencies


def warm_up_case(table: Path, rows: int, warm_up: bool) -> dict[str, float | str]:
    resident = evict(table)
    service = Service(table, 1, warm_up)
    try:
        latencies = sorted(asyncio.run(first_requests(service.port, rows, 1000)))
        return {
            "resident_before": resident,
            "ready_s": service.ready_seconds,
            "p50_ms": latencies[500] * 1000,
            "p99_ms": latencies[989] * 1000,
            "max_ms": latencies[-1] * 1000,
        }
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--rows", type=int, default=2_100_000)
    parser.add_argument("--cold-rows", type=int, default=3_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--part", choices=("all", "workers", "warm-up"), default="all")
    args = parser.parse_args()
    if args.part in ("all", "workers"):
        compare_workers(args)
    if args.part in ("all", "warm-up"):
        compare_warm_up(args)


def compare_workers(args: argparse.Namespace) -> None:
    table = make_table(args.rows, args.dim)
    size_gib = table.stat().st_size / 2**30
    print(
        f"## 2 workers vs 1 ({args.rows:,} x {args.dim} float32, {size_gib:.2f} GiB, {os.cpu_count()} cores)\n"
    )
    print(
        "| workers | req/s | vectors/s | vectors per server CPU-s | server CPU-s | p99 ms | errors | RSS MiB | PSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for workers in (1, 2):
        r = throughput(table, args.rows, workers, args.duration)
        print(
            f"| {workers} | {r['rps']:,.0f} | {r['vectors_per_s']:,.0f} | {r['vectors_per_cpu_s']:,.0f} "
            f"| {r['cpu_s']:.1f} | {r['p99_ms']:.1f} | {r['errors']:.0f} | {r['rss']:,.0f} | {r['pss']:,.0f} |"
        )
        sys.stdout.flush()
    print(f"\nload average at the end: {os.getloadavg()}")


def compare_warm_up(args: argparse.Namespace) -> None:
    cold = write_cold_table(args.cold_rows, args.dim)
    cold_gib = cold.stat().st_size / 2**30
    print(
        f"\n## First 1,000 requests on a cold table ({args.cold_rows:,} x {args.dim}, {cold_gib:.2f} GiB)\n"
    )
    print("| EMBED_WARM_UP | resident before start | ready after s | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for warm_up in (False, True):
        r = warm_up_case(cold, args.cold_rows, warm_up)
        print(
            f"| {str(warm_up).lower()} | {r['resident_before']} B | {r['ready_s']:.1f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['max_ms']:.2f} |"
        )
        sys.stdout.flush()
    cold.unlink()


if __name__ == "__main__":
    main()
