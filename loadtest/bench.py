"""Throughput and CPU cost: the service against a tuned FastAPI endpoint, driven by wrk.

    python3 dev.py bench [--duration 5] [--dists uniform,zipf1.1] [--only service,tuned]
                         [--match W3] [--extras] [--service-root ../baseline] [--save docs/benchmark.md]
                         [--baseline-root ../before] [--ceiling]

Makes a 1,000,000 x 128 float32 table, pins each server to core 0 and wrk to core 1 (where
there are two), and for each id distribution (``repeated``: 64 bodies in rotation;
``uniform`` over the whole table; ``zipf0.9/1.1/1.3``) starts fresh servers and sends each
workload (W1: 1 id, 64 connections; W2: 32 ids, 64; W3: 1,024 ids, 16) as JSON and binary.
Bodies come from files large enough that the measured run never repeats one (its warm-up
reads another file of the same distribution), so rows recur only as the distribution says.

Per row: req/s, p50/p99, server CPU-seconds (utime+stime of the server's process tree from
/proc, before/after the row), vectors per CPU-second, the ratio of that to the tuned
FastAPI row of the same distribution, workload and wire, and the service's row-text cache
hit rate over the row (from /metrics). It asserts nothing: read figures side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest.bench_servers import Server, cpu_seconds, pinned  # noqa: E402
from loadtest.id_distributions import DISTRIBUTIONS, REPEATED_BODIES, IdSampler  # noqa: E402

DATA = ROOT / "bench_data"
WORKLOADS = {"W1": (1, 64), "W2": (32, 64), "W3": (1024, 16)}  # ids/request, connections
# Enough bodies that a measured run (a few seconds) never wraps around its file.
BODIES = {"W1": 262_144, "W2": 65_536, "W3": 4_096}
WARM_BODIES = {"W1": 32_768, "W2": 8_192, "W3": 1_024}
SAVE_BEGIN, SAVE_END = "<!-- bench:begin -->", "<!-- bench:end -->"

LUA = r"""
local bodies = {}
local path = os.getenv("BENCH_PATH")
local binary = os.getenv("BENCH_BINARY") == "1"
for line in io.lines(os.getenv("BENCH_BODIES")) do
  if binary then
    line = (line:gsub("..", function(cc) return string.char(tonumber(cc, 16)) end))
  end
  bodies[#bodies + 1] = line
end
local i = 0
local headers = {["Content-Type"] = os.getenv("BENCH_CTYPE"), ["Accept"] = os.getenv("BENCH_ACCEPT")}
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


@dataclass(frozen=True)
class Case:
    """One measured row: which server, route, workload and wire format."""

    server: str
    route: str
    workload: str
    wire: str
    connections: int | None = None
    label: str = ""


@dataclass
class Row:
    """A case's figures within one distribution."""

    case: Case
    distribution: str
    wrk: dict[str, float]
    cpu: float
    hit_rate: float | None
    memory: tuple[float, float]

    @property
    def vectors_per_cpu(self) -> float:
        return self.wrk["requests"] * WORKLOADS[self.case.workload][0] / max(self.cpu, 1e-9)


# ------------------------------------------------------------------ inputs
def make_table(rows: int, dim: int) -> Path:
    """The benchmark table (.npy, standard normal float32), made once."""
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


def warm_page_cache(path: Path) -> None:
    """Read the table once so that no server's first row pays for disk reads."""
    with path.open("rb") as data:
        while data.read(64 << 20):
            pass


def bench_repository(table: Path, prefix: str) -> Path:
    """A new model repository holding ``table`` as ``big.npy``: a hard link, not a symlink
    (the service refuses symlinks that leave its repository), so it lives beside the table."""
    repo = Path(tempfile.mkdtemp(prefix=prefix, dir=table.parent))
    os.link(table, repo / "big.npy")
    return repo


def make_repository(table: Path) -> Path:
    """One file, three tables: numpy (default), ORT batched, ORT unbatched."""
    repo = bench_repository(table, "bench-repo-")
    for name, options in (
        ("big_ort", 'backend = "onnxruntime"\nbatching = true\n'),
        ("big_ort_nobatch", 'backend = "onnxruntime"\nbatching = false\n'),
    ):
        (repo / name).mkdir()
        (repo / name / "table.npy").symlink_to(repo / "big.npy")  # inside the repository
        (repo / name / "table.toml").write_text(options)
    return repo


def body_line(ids: np.ndarray, wire: str) -> str:
    """One request body as a line of the bodies file (binary ones hex-encoded)."""
    if wire == "binary":
        return ids.astype("<i8").tobytes().hex()
    if wire == "v2binary":
        return (v2_header(ids.size) + ids.astype("<i8").tobytes()).hex()
    if wire == "bags":
        return json.dumps({"bags": [ids.tolist()], "mode": "mean"})
    if wire == "neighbors":
        return json.dumps({"ids": ids[:1].tolist(), "k": 10})
    if wire == "base64":
        return json.dumps({"ids": ids.tolist(), "encoding": "base64"})
    return json.dumps({"ids": ids.tolist()})


def write_bodies(distribution: str, workload: str, wire: str, rows: int, warm: bool) -> Path:
    """The bodies file of one distribution/workload/wire; a different seed for the warm-up."""
    size = WORKLOADS[workload][0]
    count = (WARM_BODIES if warm else BODIES)[workload]
    if distribution == "repeated":
        count = REPEATED_BODIES
    kind = "warm" if warm and distribution != "repeated" else "run"
    path = DATA / f"bodies_{distribution}_{workload}_{wire}_{rows}_{kind}.txt"
    if not path.exists():
        seed = 1000 * list(WORKLOADS).index(workload) + (7 if kind == "warm" else 0)
        sampler = IdSampler(distribution, rows, seed)
        lines = [body_line(sampler.draw(size), wire) for _ in range(count)]
        path.write_text("\n".join(lines) + "\n")
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


# --------------------------------------------------------------- measuring
def run_wrk(
    port: int, case: Case, bodies: Path, seconds: float, cores: str | None
) -> dict[str, float]:
    """One wrk run of ``case`` over ``bodies``; its summary (requests, latency percentiles)."""
    script = DATA / "bench.lua"
    script.write_text(LUA)
    binary_in = case.wire in ("binary", "v2binary")
    env = {
        **os.environ,
        "BENCH_PATH": case.route,
        "BENCH_BODIES": str(bodies),
        "BENCH_BINARY": "1" if binary_in else "0",
        "BENCH_CTYPE": "application/octet-stream" if case.wire == "binary" else "application/json",
        "BENCH_ACCEPT": "application/octet-stream" if case.wire == "binary" else "application/json",
    }
    if case.wire == "v2binary":
        env["BENCH_HEADER_NAME"] = "Inference-Header-Content-Length"
        env["BENCH_HEADER_VALUE"] = str(len(v2_header(WORKLOADS[case.workload][0])))
    conns = case.connections or WORKLOADS[case.workload][1]
    # One wrk thread: two would start at the same body and send every body twice.
    cmd = ["wrk", "-t", "1", "-c", str(conns), "-d", f"{max(1, round(seconds))}s"]
    cmd += ["--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}"]
    out = subprocess.run(pinned(cores, cmd), env=env, capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("BENCH "))
    result: dict[str, float] = json.loads(line[6:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


_CACHE_SAMPLE = re.compile(
    r'^embedding_row_cache(_events_total)?\{(?:event|stat)="(hits|misses)",table="big"\} (\S+)$',
    re.M,
)


def cache_counts(server: Server) -> tuple[float, float] | None:
    """Row-text cache hits and misses of table ``big`` so far (None for servers without one).

    Reads the counters, or the original code's scrape-time gauge where there are none.
    """
    if not server.has_metrics:
        return None
    try:
        text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    found = {
        (bool(counter), event): float(value)
        for counter, event, value in _CACHE_SAMPLE.findall(text)
    }
    counter = any(is_counter for is_counter, _ in found)
    return found.get((counter, "hits"), 0.0), found.get((counter, "misses"), 0.0)


def measure(
    server: Server, case: Case, distribution: str, args: argparse.Namespace, cores: str | None
) -> Row:
    """Warm up on one bodies file, then measure on another: throughput, CPU, hit rate."""
    warm = write_bodies(distribution, case.workload, case.wire, args.rows, warm=True)
    bodies = write_bodies(distribution, case.workload, case.wire, args.rows, warm=False)
    run_wrk(server.port, case, warm, args.warmup, cores)
    before, cpu_before = cache_counts(server), cpu_seconds(server.pid)
    result = run_wrk(server.port, case, bodies, args.duration, cores)
    cpu = cpu_seconds(server.pid) - cpu_before
    after = cache_counts(server)
    rate = None
    if before is not None and after is not None:
        hits, misses = after[0] - before[0], after[1] - before[1]
        rate = hits / (hits + misses) if hits + misses else None
    return Row(case, distribution, result, cpu, rate, server.memory_mib())


# ----------------------------------------------------------------- servers
def build_servers(args: argparse.Namespace, table: Path, repo: Path) -> dict[str, Server]:
    """Every server the bench knows: the service (from ``--service-root``) and references."""
    py = sys.executable
    root = args.service_root.resolve()
    service = [py, "-m", "service", "serve", "--models", str(repo), "--port", "{port}"]
    service += ["--log-level", "warning"]
    reference = [py, "-m", "uvicorn", "--port", "{port}", "--log-level", "warning"]
    reference += ["--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    ref_env = {"BENCH_TABLE": str(table), "PYTHONPATH": str(ROOT)}
    svc_env = {"PYTHONPATH": str(root)}

    def ref(name: str, app: str, *extra: str, probe: str = "/docs") -> Server:
        cmd = [*reference, *extra, f"loadtest.reference_servers:{app}"]
        return Server(name, cmd, ref_env, probe, cwd=ROOT, has_metrics=False)

    def svc(name: str, *extra: str, env: dict[str, str] = svc_env, cwd: Path = root) -> Server:
        return Server(name, [*service, *extra], env, cwd=cwd)

    servers = {
        "tuned": ref("tuned", "tuned_app"),
        "naive": ref("naive", "naive_app"),
        "bare": ref("bare", "bare_app", probe="/ready"),
        "service": svc("service"),
        "service-nofast": svc("service-nofast", "--no-raw-asgi-front"),
        "service-nolane": svc("service-nolane", "--no-direct-lane"),
        "service-2w": svc("service-2w", "--workers", "2"),
        "tuned-2w": ref("tuned-2w", "tuned_app", "--workers", "2"),
    }
    if args.baseline_root is not None:
        base = args.baseline_root.resolve()
        servers["baseline"] = svc("baseline", env={"PYTHONPATH": str(base)}, cwd=base)
    return servers


def core_cases() -> list[Case]:
    """What every distribution gets: JSON and binary, W1-W3, service and tuned FastAPI."""
    lookup = "/v1/tables/big/lookup"
    cases = [Case("tuned", "/lookup", w, "json") for w in WORKLOADS]
    cases += [Case("tuned", "/lookup_binary", w, "binary") for w in WORKLOADS]
    cases += [Case("service", lookup, w, wire) for w in WORKLOADS for wire in ("json", "binary")]
    return cases


def extra_cases() -> list[Case]:
    """``--extras``: other formats, backends, routes and server setups (uniform ids only)."""
    lookup = "/v1/tables/{t}/lookup"
    cases = [Case("naive", "/lookup", w, "json") for w in WORKLOADS]
    cases += [Case("service", lookup.format(t="big"), w, "base64") for w in WORKLOADS]
    for table, label in (("big_ort", "ORT batching on"), ("big_ort_nobatch", "ORT batching off")):
        for w, wire in (("W1", "json"), ("W1", "binary"), ("W2", "binary"), ("W3", "binary")):
            cases.append(Case("service", lookup.format(t=table), w, wire, label=label))
    v2 = "/v2/models/big/infer"
    cases += [Case("service", v2, w, "v2binary", label="V2 binary (Triton)") for w in WORKLOADS]
    cases.append(Case("service", "/v1/tables/big/bags", "W2", "bags", label="bags: 32 ids, mean"))
    neighbors = "/v1/tables/big/neighbors"
    cases.append(Case("service", neighbors, "W1", "neighbors", 4, "neighbors k=10, exact"))
    cases += [
        Case("service-nofast", lookup.format(t="big"), w, "json", label="FastAPI routing")
        for w in ("W1", "W3")
    ]
    cases += [
        Case("service-nolane", lookup.format(t="big"), w, wire, label="direct lane off")
        for w in ("W1", "W2")
        for wire in ("json", "binary")
    ]
    cases += [
        Case("service-2w", lookup.format(t="big"), w, wire, label="2 workers")
        for w, wire in (("W1", "json"), ("W2", "json"), ("W3", "binary"))
    ]
    cases.append(Case("tuned-2w", "/lookup", "W1", "json", label="2 workers"))
    cases.append(Case("tuned-2w", "/lookup_binary", "W3", "binary", label="2 workers"))
    return cases


def same_cases(cases: list[Case], server: str) -> list[Case]:
    """The service's core cases again, served by ``server`` (a baseline or the ceiling)."""
    return [
        Case(server, "/lookup_binary" if c.wire == "binary" else "/lookup", c.workload, c.wire)
        if server == "bare"
        else Case(server, c.route, c.workload, c.wire)
        for c in cases
        if c.server == "service" and not c.label
    ]


def selected_cases(args: argparse.Namespace, distribution: str) -> list[Case]:
    """Cases of one distribution after ``--only`` / ``--match``, comparisons back to back."""
    cases = core_cases() + (extra_cases() if args.extras and distribution == "uniform" else [])
    only = {name for name in args.only.split(",") if name}
    if args.baseline_root is not None:
        cases += same_cases(cases, "baseline")
    if args.ceiling or "bare" in only:
        cases += same_cases(cases, "bare")
    order = {w: i for i, w in enumerate(WORKLOADS)}
    wires = ["json", "base64", "binary", "v2binary", "bags", "neighbors"]
    chosen = [
        c
        for c in cases
        if (not only or c.server in only)
        and args.match in f"{c.label} {c.workload} {c.wire} {distribution}"
    ]
    return sorted(chosen, key=lambda c: (order[c.workload], wires.index(c.wire)))


def run_distribution(
    args: argparse.Namespace,
    distribution: str,
    servers: dict[str, Server],
    cores: tuple[str | None, str | None],
) -> list[Row]:
    """Fresh servers (empty caches), then every selected case of ``distribution``."""
    cases = selected_cases(args, distribution)
    names = sorted({case.server for case in cases})
    rows: list[Row] = []
    try:
        for name in names:
            servers[name].start(None if name.endswith("2w") else cores[0])
        for case in cases:
            multi = case.server.endswith("2w")
            row = measure(
                servers[case.server], case, distribution, args, None if multi else cores[1]
            )
            rows.append(row)
            print(f"  {distribution:8} {format_row(row, None)}", flush=True)
    finally:
        for name in names:
            servers[name].stop()
    return rows


# --------------------------------------------------------------- reporting
HEADER = (
    "| distribution | server | variant | workload | wire | conns | req/s | p50 ms | p99 ms | errors "
    "| server CPU s | vectors / CPU-s | vs tuned (CPU) | vs tuned (req/s) | cache hits | PSS MiB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _family(wire: str) -> str:
    return "binary" if "binary" in wire else "json"


def format_row(row: Row, tuned: Row | None) -> str:
    """One markdown table row; ratios against the tuned row of the same cell (if any)."""
    case, r = row.case, row.wrk
    size, conns = WORKLOADS[case.workload]
    cpu_ratio = rps_ratio = "-"
    if tuned is not None and tuned.vectors_per_cpu and tuned.wrk["rps"]:
        cpu_ratio = f"{row.vectors_per_cpu / tuned.vectors_per_cpu:.2f}x"
        rps_ratio = f"{r['rps'] / tuned.wrk['rps']:.2f}x"
    hits = "-" if row.hit_rate is None else f"{row.hit_rate:.0%}"
    return (
        f"| {row.distribution} | {case.server} | {case.label or '-'} | {case.workload} ({size} ids) "
        f"| {case.wire} | {case.connections or conns} | {r['rps']:,.0f} | {r['p50_us'] / 1000:.2f} "
        f"| {r['p99_us'] / 1000:.2f} | {r['errors']:.0f} | {row.cpu:.2f} | {row.vectors_per_cpu:,.0f} "
        f"| {cpu_ratio} | {rps_ratio} | {hits} | {row.memory[1]:,.0f} |"
    )


def render(rows: list[Row], args: argparse.Namespace) -> str:
    """The markdown table of a run, with how it was made."""
    tuned = {
        (row.distribution, row.case.workload, _family(row.case.wire)): row
        for row in rows
        if row.case.server == "tuned"
    }
    lines = [
        f"Table {args.rows:,} x {args.dim} float32; {args.duration:.0f} s per row after "
        f"{args.warmup:.0f} s warm-up on other bodies of the same distribution; server on core 0, "
        f"wrk on core 1 (2-worker rows unpinned); service at commit {service_commit(args.service_root)}. "
        "vs tuned (CPU): vectors per server CPU-second over tuned FastAPI's, same distribution, "
        "workload and wire family (JSON to JSON, binary to binary). cache hits: share of looked-up "
        "rows the row-text cache answered during the row."
        + (
            f" baseline: the service at commit {service_commit(args.baseline_root)}, same run."
            if args.baseline_root is not None
            else ""
        )
        + (" bare: raw ASGI + orjson + np.take on uvicorn, no framework." if args.ceiling else ""),
        "",
        HEADER,
    ]
    for row in rows:
        key = (row.distribution, row.case.workload, _family(row.case.wire))
        lines.append(format_row(row, None if row.case.server == "tuned" else tuned.get(key)))
    return "\n".join(lines) + "\n"


def service_commit(root: Path) -> str:
    """The short commit of the checkout the service ran from (no machine paths in reports)."""
    out = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def save(report: str, path: Path) -> None:
    """Write the report between the bench markers of ``path`` (the whole file if it has none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    # The markers on lines of their own (the docs also name them inline).
    block = re.compile(f"^{re.escape(SAVE_BEGIN)}$.*?^{re.escape(SAVE_END)}$", re.M | re.S)
    if block.search(text):
        replacement = f"{SAVE_BEGIN}\n{report.rstrip()}\n{SAVE_END}"
        text = block.sub(lambda _match: replacement, text, count=1)
    elif text.strip():
        raise SystemExit(f"{path} has no {SAVE_BEGIN} / {SAVE_END} lines: not overwriting it")
    else:
        text = report
    path.write_text(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured row")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of unmeasured load first"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dists", default=",".join(DISTRIBUTIONS), help="id distributions to run")
    parser.add_argument("--only", default="", help="comma-separated server names to run")
    parser.add_argument(
        "--match", default="", help="only rows whose label/workload/wire contains this"
    )
    parser.add_argument(
        "--extras", action="store_true", help="also other formats, backends, 2 workers"
    )
    parser.add_argument(
        "--service-root",
        type=Path,
        default=ROOT,
        help="checkout to run the service from (before/after)",
    )
    parser.add_argument(
        "--baseline-root",
        type=Path,
        help="also run the service from this checkout as server 'baseline' (before/after in one run)",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also run 'bare': raw ASGI + orjson + np.take on uvicorn, no framework, no cache",
    )
    parser.add_argument("--save", type=Path, help="also write the table (markdown) to this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    two_cores = (os.cpu_count() or 1) >= 2
    cores = ("0", "1") if two_cores else (None, None)
    table = make_table(args.rows, args.dim)
    warm_page_cache(table)
    repo = make_repository(table)
    servers = build_servers(args, table, repo)
    rows: list[Row] = []
    try:
        for distribution in args.dists.split(","):
            rows += run_distribution(args, distribution, servers, cores)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    report = render(rows, args)
    print(report)
    if args.save:
        save(report, args.save)


if __name__ == "__main__":
    main()
