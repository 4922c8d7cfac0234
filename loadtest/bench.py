"""Throughput/latency benchmark: the service against reference FastAPI servers, driven by wrk.

    python3 dev.py bench [--duration 5] [--rows 1000000] [--dim 128] [--only W1] [--save docs/benchmark.md]

Starts every server itself on a 1,000,000 x 128 float32 .npy table, pins the server to core 0
and wrk to core 1 (where there are two), rotates many request bodies per workload, and prints
one table: req/s, vectors/s, p50/p99, errors, ratio to the tuned-FastAPI row of the same
workload and wire format, and server memory (RSS and PSS, which counts shared pages once).
It asserts nothing: figures are to be read side by side, within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench_data"

WORKLOADS = {"W1": (1, 64), "W2": (32, 64), "W3": (1024, 16)}  # ids/request, connections
BODIES = {"W1": 2000, "W2": 1000, "W3": 100}

LUA = r"""
local bodies = {}
local path = os.getenv("BENCH_PATH")
local ctype = os.getenv("BENCH_CTYPE")
local accept = os.getenv("BENCH_ACCEPT")
local binary = os.getenv("BENCH_BINARY") == "1"
for line in io.lines(os.getenv("BENCH_BODIES")) do
  if binary then
    line = (line:gsub("..", function(cc) return string.char(tonumber(cc, 16)) end))
  end
  bodies[#bodies + 1] = line
end
local i = 0
local headers = {["Content-Type"] = ctype, ["Accept"] = accept}
if os.getenv("BENCH_HEADER_NAME") then
  headers[os.getenv("BENCH_HEADER_NAME")] = os.getenv("BENCH_HEADER_VALUE")
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", path, headers, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cores: str | None, command: list[str]) -> list[str]:
    if cores and shutil.which("taskset"):
        return ["taskset", "-c", cores, *command]
    return command


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    process: subprocess.Popen | None = None
    port: int = 0

    def start(self, cores: str | None) -> None:
        self.port = free_port()
        cmd = [part.replace("{port}", str(self.port)) for part in self.command]
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            pinned(cores, cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=1)
                if r.status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def memory_mib(self) -> tuple[float, float]:
        """RSS and PSS of the server and its children, in MiB."""
        assert self.process is not None
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
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

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def make_table(rows: int, dim: int) -> Path:
    DATA.mkdir(exist_ok=True)
    path = DATA / f"big_{rows}x{dim}.npy"
    if not path.exists():
        table = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
        rng = np.random.default_rng(0)
        for start in range(0, rows, 100_000):
            stop = min(rows, start + 100_000)
            table[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
        table.flush()
        del table
    return path


def make_repository(table: Path) -> Path:
    """One file, three tables: numpy (default), ORT batched, ORT unbatched."""
    repo = Path(tempfile.mkdtemp(prefix="bench-repo-"))
    (repo / "big.npy").symlink_to(table)
    for name, options in (
        ("big_ort", 'backend = "onnxruntime"\nbatching = true\n'),
        ("big_ort_nobatch", 'backend = "onnxruntime"\nbatching = false\n'),
    ):
        (repo / name).mkdir()
        (repo / name / "table.npy").symlink_to(table)
        (repo / name / "table.toml").write_text(options)
    return repo


def write_bodies(workload: str, rows: int, wire: str) -> Path:
    size, _ = WORKLOADS[workload]
    rng = np.random.default_rng(hash(workload) % 2**32)
    path = DATA / f"bodies_{workload}_{wire}_{rows}.txt"
    with path.open("w") as out:
        for _ in range(BODIES[workload]):
            ids = rng.integers(0, rows, size=size)
            if wire == "binary":
                out.write(ids.astype("<i8").tobytes().hex() + "\n")
            elif wire == "bags":
                out.write(json.dumps({"bags": [ids.tolist()], "mode": "mean"}) + "\n")
            elif wire == "neighbors":
                out.write(json.dumps({"ids": ids[:1].tolist(), "k": 10}) + "\n")
            elif wire == "v2binary":
                out.write((v2_header(size) + ids.astype("<i8").tobytes()).hex() + "\n")
            elif wire == "base64":
                out.write(json.dumps({"ids": ids.tolist(), "encoding": "base64"}) + "\n")
            else:
                out.write(json.dumps({"ids": ids.tolist()}) + "\n")
    return path


def v2_header(size: int) -> bytes:
    """The JSON part of a binary V2 infer request (same length for every body of a workload)."""
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "ids",
                    "shape": [size],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": size * 8},
                }
            ],
            "outputs": [{"name": "embeddings", "parameters": {"binary_data": True}}],
        }
    ).encode()


def run_client(port: int, workload: str, seconds: float, cores: str | None) -> dict:
    """The project's AsyncEmbeddingClient (binary transport) at the workload's concurrency."""
    import asyncio

    from service.client import AsyncEmbeddingClient

    if cores and hasattr(os, "sched_setaffinity"):
        previous = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {int(cores)})
    size, conns = WORKLOADS[workload]
    rng = np.random.default_rng(1)
    bodies = [rng.integers(0, 1_000_000, size=size) for _ in range(500)]
    latencies: list[float] = []
    errors = 0

    async def worker(client: AsyncEmbeddingClient, offset: int, stop: float) -> None:
        nonlocal errors
        i = offset
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                await client.lookup("big", bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - started)
            except Exception:
                errors += 1
            i += 1

    async def main() -> float:
        limits_client = AsyncEmbeddingClient(f"http://127.0.0.1:{port}", retries=0)
        async with limits_client as client:
            started = time.perf_counter()
            await asyncio.gather(*(worker(client, k, started + seconds) for k in range(conns)))
            return time.perf_counter() - started

    try:
        elapsed = asyncio.run(main())
    finally:
        if cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, previous)
    ordered = sorted(latencies) or [0.0]
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "errors": errors,
        "p50_us": int(ordered[len(ordered) // 2] * 1e6),
        "p99_us": int(ordered[int(len(ordered) * 0.99)] * 1e6),
        "rps": len(latencies) / elapsed,
    }


def run_wrk(
    port: int,
    path: str,
    bodies: Path,
    wire: str,
    connections: int,
    seconds: float,
    cores: str | None,
) -> dict:
    script = DATA / "bench.lua"
    script.write_text(LUA)
    env = {
        **os.environ,
        "BENCH_PATH": path,
        "BENCH_BODIES": str(bodies),
        "BENCH_BINARY": "1" if wire in ("binary", "v2binary") else "0",
        "BENCH_CTYPE": "application/octet-stream" if wire == "binary" else "application/json",
        "BENCH_ACCEPT": "application/octet-stream" if wire == "binary" else "application/json",
    }
    if wire == "v2binary":
        size = next(v for w, (v, _) in WORKLOADS.items() if bodies.name.startswith(f"bodies_{w}_"))
        env["BENCH_HEADER_NAME"] = "Inference-Header-Content-Length"
        env["BENCH_HEADER_VALUE"] = str(len(v2_header(size)))
    threads = max(1, min(2, connections))
    cmd = pinned(
        cores,
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
    )
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH "))
    result = json.loads(line[6:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


@dataclass(frozen=True)
class Case:
    server: str
    route: str
    workload: str
    wire: str
    connections: int | None = None
    label: str = ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured row")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of unmeasured load first"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--only", default="", help="comma-separated server names to run")
    parser.add_argument("--match", default="", help="only rows whose variant label contains this")
    parser.add_argument("--save", type=Path, help="also write the table (markdown) to this file")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    two_cores = (os.cpu_count() or 1) >= 2
    server_cores, load_cores = ("0", "1") if two_cores else (None, None)
    table = make_table(args.rows, args.dim)
    repo = make_repository(table)
    py = sys.executable
    service = [
        py,
        "-m",
        "service",
        "serve",
        "--models",
        str(repo),
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ]
    reference = [
        py,
        "-m",
        "uvicorn",
        "--port",
        "{port}",
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    ref_env = {"BENCH_TABLE": str(table), "PYTHONPATH": str(ROOT)}
    servers = {
        "tuned": Server(
            "tuned", [*reference, "loadtest.reference_servers:tuned_app"], ref_env, "/docs"
        ),
        "naive": Server(
            "naive", [*reference, "loadtest.reference_servers:naive_app"], ref_env, "/docs"
        ),
        "service": Server("service", service),
        "service-nofast": Server("service-nofast", [*service, "--no-fast-path"]),
        "service-2w": Server("service-2w", [*service, "--workers", "2"]),
        "tuned-2w": Server(
            "tuned-2w",
            [*reference, "--workers", "2", "loadtest.reference_servers:tuned_app"],
            ref_env,
            "/docs",
        ),
    }
    lookup = "/v1/tables/{t}/lookup"
    cases: dict[str, list[Case]] = {
        "tuned": [Case("tuned", "/lookup", w, "json") for w in WORKLOADS]
        + [Case("tuned", "/lookup_binary", w, "binary") for w in WORKLOADS],
        "naive": [Case("naive", "/lookup", w, "json") for w in WORKLOADS],
        "service": [
            Case("service", lookup.format(t="big"), w, wire)
            for w in WORKLOADS
            for wire in ("json", "base64", "binary")
        ]
        + [
            Case("service", lookup.format(t=t), w, wire, label=label)
            for t, label in (
                ("big_ort", "ORT batching on"),
                ("big_ort_nobatch", "ORT batching off"),
            )
            for w, wire in (("W1", "json"), ("W1", "binary"), ("W2", "binary"), ("W3", "binary"))
        ]
        + [
            Case("service", "/v2/models/big/infer", w, "v2binary", label="V2 binary (Triton)")
            for w in WORKLOADS
        ]
        + [
            Case("service", "client", w, "binary", label="project client (async)")
            for w in ("W1", "W3")
        ]
        + [
            Case(
                "service", "/v1/tables/big/bags", "W2", "bags", label="bags: 1 bag of 32 ids, mean"
            )
        ]
        + [
            Case(
                "service",
                "/v1/tables/big/neighbors",
                "W1",
                "neighbors",
                connections=4,
                label="neighbors k=10, cosine, exact",
            )
        ]
        + [
            Case(
                "service",
                lookup.format(t=t),
                "W1",
                "binary",
                connections=1,
                label=label + ", 1 conn",
            )
            for t, label in (
                ("big_ort", "ORT batching on"),
                ("big_ort_nobatch", "ORT batching off"),
                ("big", "numpy"),
            )
        ],
        "service-nofast": [
            Case("service-nofast", lookup.format(t="big"), w, "json", label="FastAPI routing")
            for w in ("W1", "W3")
        ],
        "service-2w": [
            Case("service-2w", lookup.format(t="big"), w, wire, label="2 workers")
            for w, wire in (("W1", "json"), ("W2", "json"), ("W3", "binary"))
        ],
        "tuned-2w": [
            Case("tuned-2w", "/lookup", "W1", "json", label="2 workers"),
            Case("tuned-2w", "/lookup_binary", "W3", "binary", label="2 workers"),
        ],
    }
    only = {s for s in args.only.split(",") if s}
    chosen = [name for name in servers if not only or name in only]
    # All servers run side by side (idle ones cost nothing) and every comparison is run back
    # to back, so a noisy neighbour moment hits all variants of a row group alike.
    order = {w: i for i, w in enumerate(WORKLOADS)}
    wires = {"json": 0, "base64": 1, "binary": 2, "v2binary": 3, "bags": 4, "neighbors": 5}
    plan = sorted(
        (case for name in chosen for case in cases[name] if args.match in case.label),
        key=lambda c: (c.connections is not None, order[c.workload], wires[c.wire]),
    )
    results: list[tuple[Case, dict, tuple[float, float]]] = []
    try:
        for name in chosen:
            servers[name].start(None if name.endswith("2w") else server_cores)
        for case in plan:
            server = servers[case.server]
            multi = case.server.endswith("2w")
            bodies = write_bodies(case.workload, args.rows, case.wire)
            conns = case.connections or WORKLOADS[case.workload][1]
            wrk_cores = None if multi else load_cores
            if case.route == "client":
                run_client(server.port, case.workload, args.warmup, wrk_cores)
                result = run_client(server.port, case.workload, args.duration, wrk_cores)
            else:
                run_wrk(server.port, case.route, bodies, case.wire, conns, args.warmup, wrk_cores)
                result = run_wrk(
                    server.port, case.route, bodies, case.wire, conns, args.duration, wrk_cores
                )
            results.append((case, result, server.memory_mib()))
            print(
                f"  {case.server:15} {case.workload} {case.wire:6} {case.label:26} {result['rps']:9.0f} req/s",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()
    shutil.rmtree(repo, ignore_errors=True)
    report = render(results, args)
    print(report)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(report)


def render(results, args) -> str:
    baseline = {}
    for case, result, _ in results:
        if case.server == "tuned":
            baseline[(case.workload, "binary" if "binary" in case.wire else "json")] = result["rps"]
    lines = [
        f"Table {args.rows:,} x {args.dim} float32; {args.duration:.0f} s per row after {args.warmup:.0f} s warm-up; "
        f"server on core 0, wrk on core 1 (2-worker rows unpinned). Ratio: to tuned FastAPI, same workload, "
        f"JSON rows to its JSON row, binary rows to its binary row.",
        "",
        "| server | variant | workload | wire | conns | req/s | vectors/s | p50 ms | p99 ms | errors | ratio | RSS MiB | PSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, r, (rss, pss) in results:
        size, conns = WORKLOADS[case.workload]
        conns = case.connections or conns
        base = baseline.get((case.workload, "binary" if "binary" in case.wire else "json"))
        ratio = f"{r['rps'] / base:.2f}x" if base else "-"
        lines.append(
            f"| {case.server} | {case.label or '-'} | {case.workload} ({size} ids) | {case.wire} | {conns} | "
            f"{r['rps']:,.0f} | {r['rps'] * size:,.0f} | {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | "
            f"{r['errors']} | {ratio} | {rss:,.0f} | {pss:,.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
