"""Row updates served end to end: visibility, update rates, lookup cost (issue 25's figures).

    python3 loadtest/row_updates_bench.py [--rows 1000000] [--dim 128] [--seconds 5]
                                          [--warmup 2] [--updates 40] [--cores 0-1]

Two service processes of two workers each over one model repository holding a
``rows x dim`` float32 table (``bench_data/``, shared with ``loadtest/bench.py``), uniform ids:

1. W2 (32 ids, 64 connections, JSON) and W3 (1,024 ids, 16 connections, binary) on a table
   with 100,000 updated rows not yet compacted (50 updates of 2,000 rows: fewer than the 64
   files that start a compaction) and on the same rows never updated (a second table, a hard
   link of the same file). Per server CPU-second (``/proc``); runs interleaved ``--repeats``
   times, medians, and the median of each repeat's ratio to the run measured next to it.
2. W2 JSON while 10,000 rows/s are applied (10 updates of 1,000 rows a second, by HTTP),
   interleaved with the same run with none (``SETTLE_SECONDS`` after each burst first: the
   compaction it made due is not charged to the next run).
3. Visibility under W2 load: ``--updates`` updates one at a time; each from its ``200`` until
   every worker of both processes has applied it (each worker counts its application in
   ``embedding_row_update_delay_seconds_count``, polled); p50 and p99.
4. Sustained update rate: by HTTP (4 clients, 1,000-row binary updates, ``--seconds``) and by
   the offline writer (``FileUpdateLog.write`` in a loop, each update durable), rows/s.

Prints markdown. The machine's other load shows in every figure: compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest.bench import (  # noqa: E402
    WORKLOADS,
    Case,
    bench_repository,
    make_table,
    run_wrk,
    warm_page_cache,
    write_bodies,
)
from loadtest.bench_servers import Server, cpu_seconds  # noqa: E402
from service.repository.npy_loader import load_npy  # noqa: E402
from service.updates.file_log import FileUpdateLog  # noqa: E402

ADMIN = "bench-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ROWS_PATH = "/v1/admin/tables/big/rows"
SETTLE_SECONDS = 6.0


def start_servers(repo: Path, cores: str | None) -> list[Server]:
    command = [sys.executable, "-m", "service", "serve", "--models", str(repo)]
    command += ["--port", "{port}", "--workers", "2", "--log-level", "warning"]
    env = {"EMBED_ADMIN_KEY": ADMIN, "PYTHONPATH": str(ROOT)}
    servers = [Server(f"s{n}", command, env=env, cwd=ROOT) for n in (1, 2)]
    for server in servers:
        server.start(cores)
    for server in servers:  # every worker has loaded the table
        while workers_loaded(server) < 2:
            time.sleep(0.1)
    return servers


def workers_loaded(server: Server) -> int:
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    found = re.search(r"^embedding_workers (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def applied(server: Server) -> int:
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    found = re.search(
        r'^embedding_row_update_delay_seconds_count\{table="big"\} (\S+)$', text, re.M
    )
    return int(float(found.group(1))) if found else 0


def post_update(client: httpx.Client, ids: np.ndarray, rows: np.ndarray) -> dict:
    body = ids.astype("<i8").tobytes() + rows.astype("<f4").tobytes()
    headers = {**AUTH, "Content-Type": "application/octet-stream", "X-Rows": str(ids.size)}
    response = client.post(ROWS_PATH, content=body, headers=headers, timeout=60)
    response.raise_for_status()
    answer: dict = response.json()
    return answer


def lookups(
    server: Server, workload: str, wire: str, args: argparse.Namespace, table: str = "big"
) -> tuple[float, float]:
    """(vectors per server CPU-second, requests/s) of one wrk run on ``table``."""
    case = Case("service", f"/v1/tables/{table}/lookup", workload, wire)
    run_wrk(
        server.port,
        case,
        write_bodies("uniform", workload, wire, args.rows, True),
        args.warmup,
        None,
    )
    bodies = write_bodies("uniform", workload, wire, args.rows, False)
    before = cpu_seconds(server.pid)
    result = run_wrk(server.port, case, bodies, args.seconds, None)
    cpu = cpu_seconds(server.pid) - before
    return result["requests"] * WORKLOADS[workload][0] / max(cpu, 1e-9), result["rps"]


def write_many(
    url: str,
    total: int,
    per_update: int,
    dim: int,
    rows: int,
    rate: float | None,
    stop: threading.Event | None = None,
) -> int:
    """Write ``total`` rows (or until ``stop``) in updates of ``per_update``; rows written."""
    rng = np.random.default_rng(per_update)
    written = 0
    with httpx.Client(base_url=url) as client:
        started = time.perf_counter()
        while written < total and not (stop is not None and stop.is_set()):
            ids = rng.choice(rows, per_update, replace=False)
            written += post_update(client, ids, rng.standard_normal((per_update, dim)))["rows"]
            if rate is not None:
                ahead = written / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
    return written


def visibility(servers: list[Server], args: argparse.Namespace) -> list[float]:
    """Seconds from each update's 200 to its application in all four workers, under W2 load."""
    case = Case("service", "/v1/tables/big/lookup", "W2", "json")
    bodies = write_bodies("uniform", "W2", "json", args.rows, False)
    load = threading.Thread(
        target=run_wrk, args=(servers[0].port, case, bodies, args.updates * 0.6 + 5, None)
    )
    load.start()
    delays = []
    rng = np.random.default_rng(3)
    url = f"http://127.0.0.1:{servers[0].port}"
    with httpx.Client(base_url=url) as client:
        for _ in range(args.updates):
            counts = [applied(s) for s in servers]
            ids = rng.choice(args.rows, 100, replace=False)
            post_update(client, ids, rng.standard_normal((100, args.dim)))
            acked = time.perf_counter()
            while any(applied(s) < c + 2 for s, c in zip(servers, counts, strict=True)):
                time.sleep(0.002)
            delays.append(time.perf_counter() - acked)
            time.sleep(rng.uniform(0.1, 0.4))
    load.join()
    return delays


def http_rate(server: Server, args: argparse.Namespace) -> float:
    stop = threading.Event()
    counts: list[int] = []
    url = f"http://127.0.0.1:{server.port}"
    threads = [
        threading.Thread(
            target=lambda: counts.append(
                write_many(url, 10**12, 1000, args.dim, args.rows, None, stop)
            )
        )
        for _ in range(4)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def offline_rate(repo: Path, args: argparse.Namespace) -> float:
    log = FileUpdateLog.for_weights(load_npy(repo / "big.npy"))
    rng = np.random.default_rng(11)
    rows = rng.standard_normal((1000, args.dim)).astype(np.float32)
    written, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        written += log.write(rng.choice(args.rows, 1000, replace=False), rows).rows
    return written / (time.perf_counter() - started)


Runs = dict[str, list[tuple[float, float]]]  # name -> (vectors / CPU-s, requests/s) per repeat
# Each measured run and the run it is compared with (measured right before it, each repeat).
REFERENCE = {
    "W2 json, 100,000 updated rows": "W2 json, never updated",
    "W3 binary, 100,000 updated rows": "W3 binary, never updated",
    "W2 json, applying 10,000 rows/s": "W2 json, none being applied",
}


def compare(
    servers: list[Server], runs: dict[str, tuple[str, str, str]], args: argparse.Namespace
) -> Runs:
    """The figures of ``runs`` (name -> table, workload, wire), interleaved ``--repeats``
    times so that the machine's other load weighs on each alike."""
    seen: Runs = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (table, workload, wire) in runs.items():
            seen[name].append(lookups(servers[0], workload, wire, args, table))
    return seen


def while_applying(servers: list[Server], args: argparse.Namespace) -> Runs:
    """W2 JSON on the updated table with none being applied, then while 10,000 rows/s are
    (``--repeats`` pairs)."""
    url = f"http://127.0.0.1:{servers[0].port}"
    during: Runs = {}
    for applying in (False, True) * args.repeats:
        stop = threading.Event()
        writer = threading.Thread(
            target=write_many, args=(url, 10**12, 1000, args.dim, args.rows, 10_000.0, stop)
        )
        if applying:
            writer.start()
        name = "W2 json, applying 10,000 rows/s" if applying else "W2 json, none being applied"
        during.setdefault(name, []).append(lookups(servers[0], "W2", "json", args, "big"))
        stop.set()
        if applying:
            writer.join()
            # Let the compaction and reloads the burst left due finish before the next run
            # (else the run with none being applied pays for them).
            time.sleep(SETTLE_SECONDS)
    return during


def measure_served(
    servers: list[Server], args: argparse.Namespace
) -> tuple[Runs, list[float], float]:
    """Lookup figures, visibility delays and the HTTP update rate, on running servers."""
    url = f"http://127.0.0.1:{servers[0].port}"
    write_many(url, 100_000, 2000, args.dim, args.rows, None)
    while min(applied(s) for s in servers) < 100:
        time.sleep(0.05)
    figures = compare(
        servers,
        {
            "W2 json, never updated": ("plain", "W2", "json"),
            "W2 json, 100,000 updated rows": ("big", "W2", "json"),
            "W3 binary, never updated": ("plain", "W3", "binary"),
            "W3 binary, 100,000 updated rows": ("big", "W3", "binary"),
        },
        args,
    )
    figures.update(while_applying(servers, args))
    delays = visibility(servers, args)
    rate_http = http_rate(servers[0], args)
    return figures, delays, rate_http


def print_figures(figures: Runs) -> None:
    """Medians of each run, and of each repeat's ratio to its reference run (measured next to
    it: steadier than a ratio of medians while the machine's speed drifts)."""
    print("| run | vectors / server CPU-s | requests/s | ratio (per repeat) |")
    print("|---|---:|---:|---|")
    for name, got in figures.items():
        per_cpu = statistics.median(v[0] for v in got)
        rps = statistics.median(v[1] for v in got)
        ratio = ""
        if name in REFERENCE:
            pairs = [a[0] / b[0] for a, b in zip(got, figures[REFERENCE[name]], strict=True)]
            each = ", ".join(f"{r:.2f}" for r in pairs)
            ratio = f"{statistics.median(pairs):.2f}x ({each})"
        print(f"| {name} | {per_cpu:,.0f} | {rps:,.0f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", default=None)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    table = make_table(args.rows, args.dim)
    warm_page_cache(table)
    repo = bench_repository(table, "rowupd-")
    os.link(table, repo / "plain.npy")  # the same rows, never updated
    servers = start_servers(repo, args.cores)
    try:
        figures, delays, rate_http = measure_served(servers, args)
    finally:
        for server in servers:
            server.stop()
    rate_offline = offline_rate(repo, args)
    print(f"\n{args.rows:,} x {args.dim} float32, uniform ids, 2 processes x 2 workers\n")
    print_figures(figures)
    p50 = statistics.median(delays)
    p99 = sorted(delays)[max(0, round(0.99 * len(delays)) - 1)]
    print(
        f"\nvisibility (200 -> applied by all 4 workers, W2 load, {len(delays)} updates): "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    print(
        f"sustained update rate: HTTP {rate_http:,.0f} rows/s (4 clients, 1,000-row updates), "
        f"offline {rate_offline:,.0f} rows/s (1,000-row updates, each durable)"
    )


if __name__ == "__main__":
    main()
