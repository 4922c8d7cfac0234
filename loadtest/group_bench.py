"""Server CPU of one group lookup against the single-table lookups it replaces.

    python loadtest/group_bench.py [--members 26] [--rows 100000] [--dim 32] [--ids 32]
                                   [--dists uniform,zipf1.1] [--duration 5] [--warmup 2]

Builds a repository holding a group ``bench`` of ``--members`` tables (``--rows`` x ``--dim``
float32 ``.npy`` each, in version folder 1), starts the service on core 0 and wrk on core 1
(where there are two), and for each id distribution sends, with rotating bodies:

- ``group``: ``POST /v1/groups/bench/lookup`` of every member, ``--ids`` ids each, as JSON
  floats and as base64;
- ``singles``: the same answer as ``--members`` single-table lookups
  (``POST /v1/tables/bench.mNN/lookup``, ``--ids`` ids each), as JSON, base64 and binary.

Per row: req/s, answers/s (one answer = every member's vectors once), p50/p99, errors, server
CPU-seconds (utime+stime of its process tree from /proc), CPU-ms per answer and its ratio to
the singles of the same wire and to the cheapest singles (the issue's target: a group answer at
most 0.5x). It asserts nothing; it stops with a message if the server has no group routes.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest import wrk_runs  # noqa: E402
from loadtest.bench import service_commit  # noqa: E402
from loadtest.bench_servers import Server, cpu_seconds  # noqa: E402
from loadtest.id_distributions import IdSampler  # noqa: E402

DATA = ROOT / "bench_data"
GROUP = "bench"


@dataclass(frozen=True)
class Mode:
    """One measured way of getting every member's vectors: ``group`` or ``singles``, a wire."""

    kind: str
    wire: str


MODES = [
    Mode("group", "float"),
    Mode("group", "base64"),
    Mode("singles", "json"),
    Mode("singles", "base64"),
    Mode("singles", "binary"),
]


def member_names(count: int) -> list[str]:
    """The group's member stems: m00, m01, ..."""
    return [f"m{index:02d}" for index in range(count)]


def make_repository(args: argparse.Namespace) -> Path:
    """``DATA/group_<members>x<rows>x<dim>/bench/1/mNN.npy`` + ``group.toml``, made once."""
    repo = DATA / f"group_{args.members}x{args.rows}x{args.dim}"
    version = repo / GROUP / "1"
    version.mkdir(parents=True, exist_ok=True)
    (repo / GROUP / "group.toml").write_text("versions = {latest = 1}\n")
    rng = np.random.default_rng(0)
    for stem in member_names(args.members):
        path = version / f"{stem}.npy"
        if not path.exists():
            np.save(path, rng.standard_normal((args.rows, args.dim), dtype=np.float32))
    return repo


def body_lines(mode: Mode, sampler: IdSampler, members: list[str], ids: int) -> list[str]:
    """The lines of one answer: one group request, or one request per member."""
    if mode.kind == "group":
        tables = {stem: {"ids": sampler.draw(ids).tolist()} for stem in members}
        body = json.dumps({"tables": tables, "encoding": mode.wire})
        return [f"/v1/groups/{GROUP}/lookup {body}"]
    lines = []
    for stem in members:
        drawn = sampler.draw(ids)
        if mode.wire == "binary":
            body = drawn.astype("<i8").tobytes().hex()
        elif mode.wire == "base64":
            body = json.dumps({"ids": drawn.tolist(), "encoding": "base64"})
        else:
            body = json.dumps({"ids": drawn.tolist()})
        lines.append(f"/v1/tables/{GROUP}.{stem}/lookup {body}")
    return lines


def write_bodies(mode: Mode, distribution: str, args: argparse.Namespace, warm: bool) -> Path:
    """A bodies file of ``--answers`` answers (a quarter for the warm-up, another seed)."""
    answers = max(1, args.answers // 4) if warm else args.answers
    name = f"group_bodies_{mode.kind}_{mode.wire}_{distribution}_{args.members}x{args.rows}"
    path = DATA / f"{name}_{args.ids}_{answers}_{'warm' if warm else 'run'}.txt"
    if not path.exists():
        sampler = IdSampler(distribution, args.rows, seed=7 if warm else 0)
        members = member_names(args.members)
        lines = [
            line for _ in range(answers) for line in body_lines(mode, sampler, members, args.ids)
        ]
        path.write_text("\n".join(lines) + "\n")
    return path


def require_group_routes(server: Server, members: list[str]) -> None:
    """Stop with a clear message unless the server serves the group and its members."""
    base = f"http://127.0.0.1:{server.port}"
    info = httpx.get(f"{base}/v1/groups/{GROUP}", timeout=10)
    probe = {"tables": {stem: {"ids": [0]} for stem in members}, "encoding": "base64"}
    lookup = httpx.post(f"{base}/v1/groups/{GROUP}/lookup", json=probe, timeout=30)
    single = httpx.post(
        f"{base}/v1/tables/{GROUP}.{members[0]}/lookup", json={"ids": [0]}, timeout=10
    )
    for what, response in (
        ("GET /v1/groups/bench", info),
        ("group lookup", lookup),
        ("member lookup", single),
    ):
        if response.status_code != 200:
            raise SystemExit(
                f"the server does not serve groups ({what}: {response.status_code} "
                f"{response.text[:300]}): it needs the serving side of issue 24 "
                "(DIR/<group>/group.toml, POST /v1/groups/{group}/lookup)"
            )


@dataclass
class Row:
    """One mode's figures within one distribution."""

    mode: Mode
    distribution: str
    wrk: dict[str, float]
    cpu: float
    members: int

    @property
    def answers(self) -> float:
        """Answers (every member's vectors once) made during the run."""
        per = 1 if self.mode.kind == "group" else self.members
        return self.wrk["requests"] / per

    @property
    def cpu_ms_per_answer(self) -> float:
        return 1000 * self.cpu / max(self.answers, 1e-9)


def measure(
    server: Server, mode: Mode, distribution: str, args: argparse.Namespace, core: str | None
) -> Row:
    """Warm up on one bodies file, then measure on another: throughput and server CPU."""
    binary, conns = mode.wire == "binary", args.connections
    warm = write_bodies(mode, distribution, args, warm=True)
    wrk_runs.run(server.port, warm, binary, conns, args.warmup, core)
    bodies = write_bodies(mode, distribution, args, warm=False)
    before = cpu_seconds(server.pid)
    result = wrk_runs.run(server.port, bodies, binary, conns, args.duration, core)
    return Row(mode, distribution, result, cpu_seconds(server.pid) - before, args.members)


HEADER = (
    "| distribution | mode | wire | req/s | answers/s | p50 ms | p99 ms | errors | server CPU s "
    "| CPU ms / answer | vs singles, same wire | vs cheapest singles |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _ratio(row: Row, other: Row | None) -> str:
    if other is None or other is row:
        return "-"
    return f"{row.cpu_ms_per_answer / other.cpu_ms_per_answer:.2f}x"


def render(rows: list[Row], args: argparse.Namespace) -> str:
    """The markdown table, with how it was made."""
    lines = [
        f"Group `{GROUP}` of {args.members} tables of {args.rows:,} x {args.dim} float32 (.npy), "
        f"{args.ids} ids per member per answer; {args.duration:.0f} s per row after {args.warmup:.0f} s "
        f"of warm-up on other bodies; {args.connections} connections; server on core 0, wrk on core 1; "
        f"service at commit {service_commit(args.service_root)}. One answer = every member's "
        f"vectors once: 1 group request or {args.members} single-table requests. Ratios: CPU per "
        "answer over the singles' (the issue's target for group: at most 0.50x).",
        "",
        HEADER,
    ]
    for row in rows:
        singles = [
            r for r in rows if r.distribution == row.distribution and r.mode.kind == "singles"
        ]
        same = {"float": "json"}.get(row.mode.wire, row.mode.wire)
        twin = next((r for r in singles if r.mode.wire == same), None)
        cheapest = min(singles, key=lambda r: r.cpu_ms_per_answer, default=None)
        r = row.wrk
        lines.append(
            f"| {row.distribution} | {row.mode.kind} | {row.mode.wire} | {r['rps']:,.0f} | {row.answers / (r['duration_us'] / 1e6):,.0f} "
            f"| {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['errors']:.0f} | {row.cpu:.2f} "
            f"| {row.cpu_ms_per_answer:.3f} | {_ratio(row, twin)} | {_ratio(row, cheapest)} |"
        )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = wrk_runs.parser(__doc__)
    parser.add_argument("--members", type=int, default=26, help="tables in the group")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of each member")
    parser.add_argument("--dim", type=int, default=32, help="dim of each member")
    parser.add_argument("--ids", type=int, default=32, help="ids per member per answer")
    parser.add_argument(
        "--dists", default="uniform,zipf1.1", help="id distributions (loadtest/id_distributions.py)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured row")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of unmeasured load first"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--answers", type=int, default=4096, help="answers in a bodies file (rotated)"
    )
    parser.add_argument(
        "--modes", default="", help="only these kind:wire pairs, e.g. group:base64,singles:binary"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cores = wrk_runs.cores()
    wanted = {m for m in args.modes.split(",") if m}
    modes = [m for m in MODES if not wanted or f"{m.kind}:{m.wire}" in wanted]
    repo = make_repository(args)
    root = args.service_root.resolve()
    rows: list[Row] = []
    for distribution in args.dists.split(","):
        server = wrk_runs.start_service(repo, root, cores[0])  # fresh: empty caches
        try:
            require_group_routes(server, member_names(args.members))
            for mode in modes:
                rows.append(measure(server, mode, distribution, args, cores[1]))
                print(f"  {distribution:8} {mode.kind:7} {mode.wire:6} done", flush=True)
        finally:
            server.stop()
    print(render(rows, args))


if __name__ == "__main__":
    main()
