"""``python3 dev.py redis``: a local Redis Cluster, the demo table pushed into it, served.

Starts 3 masters + 3 replicas (``--single``: one server) on free ports under
``.dev-redis/``, pushes the deterministic demo table as ``demo``, writes
``.dev-redis/models/demo.toml`` pointing at it and serves that folder (extra
arguments go to ``embedding-service serve``). Ctrl-C stops the service and Redis.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from service.redis_local import RedisCluster, RedisNode, RedisNotInstalled
from service.repository.demo import demo_table

ROOT = Path.cwd() / ".dev-redis"


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
    try:
        kind = "server" if args.single else "cluster (3 masters + 3 replicas)"
        print(f"Redis {kind} at {store.url}; pushing the demo table", flush=True)
        cli = [sys.executable, "-m", "service"]
        subprocess.run(
            [*cli, "push", str(source), "--redis", store.url, "--name", "demo"], check=True
        )
        (models / "demo.toml").write_text(f'redis = "{store.url}"\ncache_rows = 10000\n')
        print(f"serving {models} (demo is a Redis table); Ctrl-C stops", flush=True)
        return subprocess.call([*cli, "serve", "--models", str(models), *serve_args])
    except KeyboardInterrupt:
        return 0
    finally:
        store.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
