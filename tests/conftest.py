"""Shared fixtures: a model repository with reference tables and a real server over it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.redis_servers import RedisCluster, RedisNode
from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy

ROWS, DIM = 1000, 16


@pytest.fixture(scope="session", autouse=True)
def session_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$TMPDIR of this test process and of every process it starts, removed at the end.

    Servers under test make their per-start folder (``embedding-service-*``: worker state,
    metrics) in $TMPDIR and remove it at exit, except when a test or a slow stop kills them:
    then it is left here, inside pytest's own temp tree, and removed with it, never in /tmp.
    Set up before, so torn down after, every other session fixture (the servers).
    """
    folder = tmp_path_factory.mktemp("tmpdir")
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # tempfile caches the folder it found first: look again
    yield folder
    if previous is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous
    tempfile.tempdir = None
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def reference_tables(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, np.ndarray]]:
    """Tables with each option the semantics tests need, as .npy files in one folder."""
    folder = tmp_path_factory.mktemp("repo") / "models"
    tables = {
        "plain": random_table(ROWS, DIM, 1),
        "padded": random_table(ROWS, DIM, 2),
        "keras": random_table(ROWS, DIM, 3),
        "norm2": random_table(ROWS, DIM, 4) * 3,
        "norm1": random_table(ROWS, DIM, 5) * 3,
        "norm3": random_table(ROWS, DIM, 6) * 3,
        "half": random_table(ROWS, DIM, 7, "float16"),
        "batched": random_table(ROWS, DIM, 8),
    }
    options = {
        "padded": "padding_idx = -1\n",
        "keras": "mask_zero = true\n",
        "norm2": "max_norm = 1.5\n",
        "norm1": "max_norm = 2.0\nnorm_type = 1.0\n",
        "norm3": "max_norm = 1.0\nnorm_type = 3.0\npadding_idx = 0\n",
        "batched": 'backend = "onnxruntime"\nbatching = true\n',
    }
    for name, table in tables.items():
        write_npy(folder, name, table, options.get(name))
    return folder, tables


@pytest.fixture(scope="session")
def server(reference_tables: tuple[Path, dict[str, np.ndarray]]) -> Iterator[ServerProcess]:
    folder, _ = reference_tables
    with ServerProcess(folder) as process:
        process.wait_ready()
        yield process


@pytest.fixture(scope="session")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


@pytest.fixture(scope="session")
def tables(reference_tables: tuple[Path, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return reference_tables[1]


@pytest.fixture(scope="session")
def redis_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    """One real redis-server on a free port (fails, never skips, when it is not installed)."""
    node = RedisNode(tmp_path_factory.mktemp("redis-single"))
    yield node
    node.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Six real redis-server nodes: 3 masters + 3 replicas (redis-cli --cluster create)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()
