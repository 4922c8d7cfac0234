"""``kill -9`` a writer at random moments: every acknowledged update stays, none is partial."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from service.repository.npy_loader import load_npy
from service.updates.delta_files import file_name, listed, read_file
from service.updates.file_log import FileUpdateLog

ROWS, DIM = 20_000, 8
ROUNDS = 20
PER_ROUND = 400
ROOT = Path(__file__).resolve().parents[3]


def _killed_writer(table: Path, first: int, rng: random.Random) -> dict[int, int]:
    """Run a writer, kill -9 it after a random number of acks and a random pause; its acks."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.updates.crash_writer",
            str(table),
            str(first),
            str(PER_ROUND),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    acks: dict[int, int] = {}
    wanted = rng.randrange(0, 25)
    while len(acks) < wanted:
        line = process.stdout.readline()
        if not line.endswith("\n"):
            break
        k, sequence = line.split()
        acks[int(k)] = int(sequence)
    time.sleep(rng.uniform(0, 0.01))  # a random moment: mid-write, mid-compaction, ...
    os.kill(process.pid, signal.SIGKILL)
    rest = process.stdout.read()  # acks printed before the kill landed; a cut last line is none
    for line in rest.split("\n")[:-1]:
        k, sequence = line.split()
        acks[int(k)] = int(sequence)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the writer failed before it was killed"
    return acks


def _check(table: Path, acks: dict[int, int], last: int) -> None:
    weights = load_npy(table)
    log = FileUpdateLog.for_weights(weights)
    for number, kind in listed(log.folder):
        read_file(log.folder / file_name(number, kind))  # every listed file is whole
    ids = np.arange(2 * (last + 1))
    rows = weights.take(ids)
    log.overlay().apply(ids, rows)
    pairs = rows[:, 0].reshape(-1, 2)
    original = np.arange(ids.size, dtype=np.float32).reshape(-1, 2) * DIM
    for k in range(last + 1):
        whole = pairs[k, 0] == pairs[k, 1] == k
        absent = (pairs[k] == original[k]).all()
        assert whole or (absent and k not in acks), f"update {k}: {pairs[k]} (acked: {k in acks})"
    for k, sequence in acks.items():
        again = log.write(np.array([2 * k]), np.zeros((1, DIM), np.float32), f"u{k}")
        assert (again.sequence, again.applied) == (sequence, False)


def test_a_killed_writer_leaves_every_update_whole_or_absent(tmp_path: Path) -> None:
    table = tmp_path / "emb.npy"
    np.save(table, np.arange(ROWS * DIM, dtype=np.float32).reshape(ROWS, DIM))
    rng = random.Random(25)
    acks: dict[int, int] = {}
    for round_number in range(ROUNDS):
        first = 1 + round_number * PER_ROUND
        acks.update(_killed_writer(table, first, rng))
        _check(table, acks, first + PER_ROUND - 1)
    assert acks, "no writer acknowledged anything"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["emb.npy"]
