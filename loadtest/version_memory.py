"""Memory of serving 1, 2 and 4 versions of one .npy table: memory-mapped versions share pages.

    python loadtest/version_memory.py [--rows 1000000] [--dim 128] [--counts 1,2,4]
                                      [--duration 5] [--workers 1]

Makes ``max(--counts)`` different ``--rows`` x ``--dim`` float32 tables (once, in bench_data/;
the first is bench.py's table),
and for each count N serves a versioned table ``DIR/t/1..N/t.npy`` (``versions = {all = true}``,
hard links to those files), drives uniform binary lookups (32 ids) spread evenly over the N
versions (``?version=``) with wrk for ``--duration`` seconds, then reads
``/proc/<pid>/smaps_rollup`` of every process of the server's tree.

Columns: RSS and PSS; private = Private_Clean + Private_Dirty; anonymous (heap, copies).
A file-backed page that only this server maps counts as Private_Clean although it is the
kernel's page cache (reclaimable, shared with any other reader of the file): what a version
would cost if it were copied into the process shows as Private_Dirty / anonymous. The table
asserts nothing; it stops with a message if the server does not serve versions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest import wrk_runs  # noqa: E402
from loadtest.bench import DATA, make_table, service_commit, warm_page_cache  # noqa: E402
from loadtest.bench_servers import Server, process_tree  # noqa: E402
from loadtest.id_distributions import IdSampler  # noqa: E402

FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Anonymous")


def version_file(number: int, rows: int, dim: int) -> Path:
    """Version ``number``'s table, made once: bench.py's table plus ``number - 1`` (its own
    values, so its own file pages)."""
    base = make_table(rows, dim)
    if number == 1:
        return base
    path = DATA / f"version{number}_{rows}x{dim}.npy"
    if not path.exists():
        np.save(path, np.load(base, mmap_mode="r") + np.float32(number - 1))
    return path


def repository(count: int, args: argparse.Namespace) -> Path:
    """``DIR/t/1..count/t.npy`` (hard links: the service refuses links leaving its repository)."""
    repo = Path(tempfile.mkdtemp(prefix="versions-repo-", dir=DATA))
    (repo / "t").mkdir()
    (repo / "t" / "table.toml").write_text("versions = {all = true}\n")
    for number in range(1, count + 1):
        (repo / "t" / str(number)).mkdir()
        os.link(version_file(number, args.rows, args.dim), repo / "t" / str(number) / "t.npy")
    return repo


def memory_kib(server: Server) -> dict[str, int]:
    """The ``FIELDS`` of smaps_rollup summed over the server's process tree, in KiB."""
    totals = dict.fromkeys(FIELDS, 0)
    for pid in process_tree(server.pid):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name in totals:
                totals[name] += int(value.split()[0])
    return totals


def require_versions(server: Server, count: int) -> None:
    """Stop with a clear message unless table ``t`` serves ``count`` versions."""
    response = httpx.get(f"http://127.0.0.1:{server.port}/v1/tables/t", timeout=10)
    served = response.json().get("versions") if response.status_code == 200 else None
    if served is None or len(served) != count:
        raise SystemExit(
            f"the server does not serve {count} versions of t (GET /v1/tables/t: "
            f"{response.status_code} {response.text[:300]}): it needs the serving side of "
            "issue 24 (DIR/<name>/<N>/ version folders, versions = {all = true})"
        )


def write_bodies(count: int, args: argparse.Namespace) -> Path:
    """Binary uniform lookups of 32 ids, turn by turn over versions 1..count."""
    path = DATA / f"version_bodies_{count}_{args.rows}_{args.bodies}.txt"
    if not path.exists():
        sampler = IdSampler("uniform", args.rows, seed=count)
        lines = [
            f"/v1/tables/t/lookup?version={1 + index % count} "
            + sampler.draw(32).astype("<i8").tobytes().hex()
            for index in range(args.bodies)
        ]
        path.write_text("\n".join(lines) + "\n")
    return path


def measure(count: int, args: argparse.Namespace, cores: tuple[str | None, str | None]) -> str:
    """One markdown row: serve ``count`` versions, load them, read the memory."""
    repo = repository(count, args)
    server_args = [] if args.workers == 1 else ["--workers", str(args.workers)]
    try:
        server = wrk_runs.start_service(repo, args.service_root.resolve(), cores[0], server_args)
        try:
            require_versions(server, count)
            idle = memory_kib(server)
            result = wrk_runs.run(
                server.port, write_bodies(count, args), True, 16, args.duration, cores[1]
            )
            loaded = memory_kib(server)
        finally:
            server.stop()
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    mib = {name: value / 1024 for name, value in loaded.items()}
    private = mib["Private_Clean"] + mib["Private_Dirty"]
    return (
        f"| {count} | {result['rps']:,.0f} | {result['errors']:.0f} | {idle['Rss'] / 1024:,.0f} "
        f"| {mib['Rss']:,.0f} | {mib['Pss']:,.0f} | {private:,.0f} | {mib['Private_Clean']:,.0f} "
        f"| {mib['Private_Dirty']:,.0f} | {mib['Anonymous']:,.0f} |"
    )


HEADER = (
    "| versions | req/s | errors | RSS idle MiB | RSS MiB | PSS MiB | private MiB "
    "| Private_Clean MiB | Private_Dirty MiB | anonymous MiB |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def parse_args() -> argparse.Namespace:
    parser = wrk_runs.parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--counts", default="1,2,4", help="numbers of versions served")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per count")
    parser.add_argument("--workers", type=int, default=1, help="server workers")
    parser.add_argument("--bodies", type=int, default=65_536, help="request bodies in rotation")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cores = wrk_runs.cores()
    counts = [int(count) for count in args.counts.split(",")]
    for number in range(1, max(counts) + 1):
        warm_page_cache(version_file(number, args.rows, args.dim))
    rows = [measure(count, args, cores) for count in counts]
    size = args.rows * args.dim * 4 / 2**20
    print(
        f"Table t: {args.rows:,} x {args.dim} float32 ({size:,.0f} MiB a version, .npy, "
        f"memory-mapped), {args.workers} worker(s); {args.duration:.0f} s of uniform binary "
        f"lookups (32 ids) spread over the versions; server on core 0, wrk on core 1; service at "
        f"commit {service_commit(args.service_root)}. Memory after the load, summed over the "
        "server's processes (smaps_rollup); private = Private_Clean + Private_Dirty, where "
        "Private_Clean includes file pages (page cache) that only this server maps.\n"
    )
    print(HEADER)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
