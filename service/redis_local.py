"""Local ``redis-server`` processes on free ports: one node, or a 3-master + 3-replica cluster.

For development (``python3 dev.py redis``), the benchmarks and the integration tests
(which start real servers: a missing ``redis-server`` fails them, saying how to install).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

CREATE_FLAGS = ("--cluster-replicas", "1", "--cluster-yes")
INSTALL_HINT = "redis-server is not installed: apt-get install redis-server (Debian/Ubuntu)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisNotInstalled(RuntimeError):
    """redis-server or redis-cli is not on PATH."""


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 <= 65535 and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_binaries() -> tuple[str, str]:
    """Paths of redis-server and redis-cli; ``RedisNotInstalled`` saying how to install."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RedisNotInstalled(INSTALL_HINT)
    return server, cli


class RedisNode:
    """One ``redis-server`` on a free port, data in ``folder`` (no persistence)."""

    def __init__(
        self,
        folder: Path,
        cluster: bool = False,
        port: int | None = None,
        password: str | None = None,
    ) -> None:
        self.server, self.cli = redis_binaries()
        self.password = password
        self.port = port or (free_cluster_port() if cluster else free_port())
        self.folder = folder / f"redis-{self.port}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart, empty) the server and wait until it answers PING."""
        args = [
            self.server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
            "--protected-mode",
            "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            # Replicas sync at once (the default waits 5 s for more replicas to share a sync).
            args += ["--repl-diskless-sync-delay", "0"]
            args += ["--cluster-config-file", str(self.folder / "nodes.conf")]
        log = (self.folder / "redis.log").open("ab")
        # A session of its own: the terminal's Ctrl-C (SIGINT to the foreground group) does not
        # reach it, so whoever started it stops it after what uses it (the service) drained.
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        try:
            self._wait_answering(self.process)
        except BaseException:  # not answering, or Ctrl-C meanwhile: no server left behind
            self.kill()
            raise

    def _wait_answering(self, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log_text = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on {self.port} exited:\n{log_text}")
            try:
                if self.client(timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} did not answer within {timeout:g} s")

    def client(self, timeout: float = 5) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: the node dies as a crashed machine would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        self.kill()


class RedisCluster:
    """Six nodes joined by ``redis-cli --cluster create ... --cluster-replicas 1``."""

    def __init__(self, folder: Path, attempts: int = 3) -> None:
        self.nodes: list[RedisNode] = []
        for attempt in range(1, attempts + 1):
            try:
                self._create(folder / f"try{attempt}")
                return
            except (subprocess.SubprocessError, TimeoutError, RuntimeError) as exc:
                self.stop()
                if attempt == attempts or isinstance(exc, RedisNotInstalled):
                    raise
                # A busy machine or a port taken meanwhile: new nodes on new ports.
                print(f"cluster creation failed ({exc!r}); retrying", file=sys.stderr)
            except BaseException:  # Ctrl-C: the nodes, in sessions of their own, are ours to stop
                self.stop()
                raise

    def _create(self, folder: Path) -> None:
        self.nodes = []
        for _ in range(6):  # one by one: a failure still leaves the started ones to stop
            self.nodes.append(RedisNode(folder, cluster=True))
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [self.nodes[0].cli, "--cluster", "create", *addresses, *CREATE_FLAGS],
            check=True,
            capture_output=True,
            timeout=90,
        )
        self.wait_ok()

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every live node reports ``cluster_state:ok`` (within ``timeout``)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                if node.process is None or node.process.poll() is not None:
                    continue
                try:
                    info = node.client().cluster("INFO")
                    states.append(info.get("cluster_state") == "ok")
                    last = str(info.get("cluster_state"))
                except redis.RedisError as exc:
                    states.append(False)
                    last = repr(exc)
            if states and all(states) and self._replicas_attached():
                return
            time.sleep(0.2)
        raise TimeoutError(f"cluster not ok within {timeout}s (last: {last})")

    def _live(self) -> list[RedisNode]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def _replicas_attached(self) -> bool:
        """Every live master with slots has a replica in sync with it (right after create, not yet)."""
        live = self._live()
        try:
            nodes = live[0].client().cluster("NODES")
            links = [n.client().info("replication") for n in live]
        except redis.RedisError:
            return False
        masters = {f["node_id"] for f in nodes.values() if "master" in f["flags"] and f["slots"]}
        replicated = {
            f["master_id"]
            for f in nodes.values()
            if "slave" in f["flags"] and "fail" not in f["flags"] and f["connected"]
        }
        synced = all(i.get("master_link_status") == "up" for i in links if i["role"] == "slave")
        return len(live) < len(self.nodes) or (masters <= replicated and synced)

    def wait_replicated(self, timeout: float = 60.0) -> None:
        """Until every write so far is on a replica of its master (``WAIT``): a failover loses none."""
        deadline = time.monotonic() + timeout
        for master in self.masters():
            while master.client().wait(1, 1000) < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no replica of {master.port} caught up within {timeout}s")

    def wait_failed_over(self, victim: RedisNode, timeout: float = 60.0) -> None:
        """Until a replica has taken over every slot of the dead ``victim`` and the cluster is ok.

        Right after the kill every node still says ``ok`` (the failure is not yet detected),
        so ``wait_ok`` alone would return before the failover began.
        """
        deadline = time.monotonic() + timeout
        while True:
            masters = self.masters()
            if victim not in masters and len(masters) == len(self.nodes) // 2:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica took over from {victim.port} within {timeout}s")
            time.sleep(0.2)
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def masters(self) -> list[RedisNode]:
        """Nodes that are masters now (by CLUSTER NODES of a live node)."""
        by_port = {n.port: n for n in self.nodes}
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            nodes = node.client().cluster("NODES")  # {"host:port": {"flags": ...}}
            return [
                by_port[int(address.split("@")[0].rsplit(":", 1)[1])]
                for address, fields in nodes.items()
                if "master" in fields["flags"] and "fail" not in fields["flags"] and fields["slots"]
            ]
        return []

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
