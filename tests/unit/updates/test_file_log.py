"""The update log of a file table: durable writes, sequences, idempotency, where it lives."""

from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from service.errors import IdOutOfRange, ServiceError
from service.repository.layout import discover_repository
from service.repository.npy_loader import load_npy
from service.repository.weights import TableWeights
from service.updates.delta_files import listed
from service.updates.file_log import FileUpdateLog, TableShape
from service.updates.layout import log_folder, stale_logs
from tests.unit.updates.conftest import DIM, ROWS, rows_of, served


def test_sequences_grow_by_one_and_rows_are_served(
    weights: TableWeights, log: FileUpdateLog
) -> None:
    assert log.sequence() == 0
    assert log.write(np.array([1, 2]), rows_of(-1, 2)).sequence == 1
    assert log.write(np.array([2]), rows_of(-2)).sequence == 2
    assert log.sequence() == 2
    answer = served(weights, log, [1, 2, 3])
    assert answer[:, 0].tolist() == [-1, -2, 12]


def test_the_same_update_id_answers_the_first_sequence(
    weights: TableWeights, log: FileUpdateLog
) -> None:
    first = log.write(np.array([1]), rows_of(-1), "job-7")
    log.write(np.array([3]), rows_of(-3))
    again = FileUpdateLog.for_weights(weights).write(np.array([1]), rows_of(-99), "job-7")
    assert (again.sequence, again.applied, first.applied) == (1, False, True)
    assert served(weights, log, [1])[0, 0] == -1
    assert log.sequence() == 2


def test_a_refused_update_writes_nothing(log: FileUpdateLog) -> None:
    with pytest.raises(IdOutOfRange):
        log.write(np.array([ROWS]), rows_of(1))
    assert listed(log.folder) == []


def test_the_log_is_hidden_from_discovery_and_keyed_by_version(
    tmp_path: Path, weights: TableWeights, log: FileUpdateLog
) -> None:
    log.write(np.array([1]), rows_of(-1))
    assert log.folder == tmp_path / ".updates" / "emb" / weights.version
    repository = discover_repository(tmp_path)
    assert list(repository.flat) == ["emb"] and not repository.problems
    np.save(tmp_path / "emb.npy", np.zeros((ROWS + 1, DIM), np.float32))  # a new version
    replaced = load_npy(tmp_path / "emb.npy")
    assert replaced.version != weights.version
    assert served(replaced, FileUpdateLog.for_weights(replaced), [1])[0, 0] == 0
    assert stale_logs(replaced.path, {replaced.version}) == [log.folder]


def test_a_versioned_table_keeps_its_log_in_its_version_folder(tmp_path: Path) -> None:
    table = tmp_path / "emb" / "3" / "weights.npy"
    table.parent.mkdir(parents=True)
    np.save(table, np.zeros((5, 2), np.float32))
    log = FileUpdateLog.for_weights(load_npy(table))
    log.write(np.array([0]), np.ones((1, 2)))
    assert (
        log.folder
        == log_folder(table, log.version)
        == table.parent / ".updates" / "weights" / log.version
    )
    versioned = discover_repository(tmp_path).tables["emb"]
    assert list(versioned.versions) == [3] and not versioned.broken


def _write_many(folder: str, start: int, count: int) -> list[int]:
    log = FileUpdateLog(Path(folder) / "emb.npy", "v", TableShape(ROWS, DIM, "float32"))
    return [log.write(np.array([start + n]), rows_of(start + n)).sequence for n in range(count)]


def test_concurrent_writers_get_distinct_consecutive_sequences(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        parts = pool.starmap(_write_many, [(str(tmp_path), 20 * w, 20) for w in range(4)])
    sequences = sorted(s for part in parts for s in part)
    assert sequences == list(range(1, 81))
    for part in parts:
        assert part == sorted(part)


@pytest.mark.parametrize(
    ("error", "status"), [(errno.EROFS, 409), (errno.EACCES, 409), (errno.ENOSPC, 503)]
)
def test_a_log_that_cannot_be_written_is_a_clear_refusal(
    log: FileUpdateLog, monkeypatch: pytest.MonkeyPatch, error: int, status: int
) -> None:
    """A repository mounted read-only answers 409 not_updatable; a full disk 503 (retry with
    the same update_id): never an unexplained 500, and nothing applied."""

    def unwritable(self: FileUpdateLog) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(FileUpdateLog, "locked", unwritable)
    with pytest.raises(ServiceError) as refused:
        log.write(np.array([1]), rows_of(1.0))
    assert refused.value.status == status and os.strerror(error) in str(refused.value)
    monkeypatch.undo()
    assert log.sequence() == 0
