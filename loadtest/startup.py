"""Start-up time and memory of the service on one big .npy table (figures for the notes).

    python loadtest/startup.py [--rows 1000000] [--dim 128] [--backend numpy|onnxruntime]

Prints seconds from process start to /readyz 200, and RSS / PSS / private memory of the server.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtest.bench import bench_repository, free_port, make_table


def memory(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) / 1024
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "private": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--backend", default="numpy")
    args = parser.parse_args()
    table = make_table(args.rows, args.dim)
    repo = bench_repository(table, "startup-")
    (repo / "big.toml").write_text(f'backend = "{args.backend}"\n')
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--models",
            str(repo),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        ready = time.perf_counter() - started
        mem = memory(process.pid)
        size = table.stat().st_size / 2**20
        print(
            f"{args.rows:,} x {args.dim} float32 ({size:,.0f} MiB), backend {args.backend}: "
            f"ready in {ready:.2f} s; RSS {mem['rss']:.0f} MiB, PSS {mem['pss']:.0f} MiB, "
            f"private {mem['private']:.0f} MiB"
        )
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(repo, ignore_errors=True)  # only links and a .toml: the table stays cached


if __name__ == "__main__":
    main()
