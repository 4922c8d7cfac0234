"""``python3 dev.py redis``: a local Redis Cluster, the demo table pushed into it, served.

Starts 3 masters + 3 replicas (``--single``: one server) on free ports under
``.dev-redis/``, pushes the deterministic demo table as ``demo``, writes
``.dev-redis/models/demo.toml`` pointing at it (with the file demo's options) and serves
that folder (extra arguments go to ``embedding-service serve``). Ctrl-C drains the service,
then stops Redis: the servers run in their own session, out of the terminal's reach.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from service.redis_local import RedisCluster, RedisNode, RedisNotInstalled
from service.repository.demo import DEMO_OPTIONS, demo_table

ROOT = Path.cwd() / ".dev-redis"


def redis_demo_options(url: str) -> str:
    """``demo.toml`` for the demo's rows in Redis at ``url``: the file demo's options, and where."""
    return f'{DEMO_OPTIONS}redis = "{url}"\ncache_rows = 10000\n'


def serve_until_stopped(command: list[str]) -> int:
    """Run the service and wait for it; Ctrl-C is its to handle (it drains, then exits).

    The terminal sends SIGINT to the whole foreground process group: this process ignores it
    and waits, so the Redis servers are stopped only after the service has finished. A no-op
    handler, not ``SIG_IGN``: an ignored signal stays ignored in the child across exec.
    """
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    try:
        return subprocess.Popen(command).wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dev.py redis", description=__doc__)
    parser.add_argument("--single", action="store_true", help="one Redis server, no cluster")
    args, serve_args = parser.parse_known_args(argv)
    shutil.rmtree(ROOT, ignore_errors=True)
    models = ROOT / "models"
    models.mkdir(parents=True)
    source = ROOT / "demo.npy"
    np.save(source, demo_table())
    try:
        store: RedisNode | RedisCluster = (
            RedisNode(ROOT / "redis") if args.single else RedisCluster(ROOT / "redis")
        )
    except RedisNotInstalled as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while the servers start: the started ones are stopped
        return 130
    try:
        kind = "server" if args.single else "cluster (3 masters + 3 replicas)"
        print(f"Redis {kind} at {store.url}; pushing the demo table", flush=True)
        cli = [sys.executable, "-m", "service"]
        subprocess.run(
            [*cli, "push", str(source), "--redis", store.url, "--name", "demo"], check=True
        )
        (models / "demo.toml").write_text(redis_demo_options(store.url))
        print(f"serving {models} (demo is a Redis table); Ctrl-C stops", flush=True)
        return serve_until_stopped([*cli, "serve", "--models", str(models), *serve_args])
    except KeyboardInterrupt:  # during the push
        return 130
    finally:
        store.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
