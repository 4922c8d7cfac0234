"""Retention of update logs: a version neither current nor touched within the grace loses its
log; the current version (also compacted), a version still marked served, and a recently
written one keep theirs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from service.repository.npy_loader import load_npy
from service.repository.onnx_loader import load_onnx
from service.repository.weights import TableWeights
from service.updates.compaction import fold_into_base, held_alone
from service.updates.file_log import FileUpdateLog
from service.updates.layout import logs_of
from service.updates.retention import (
    RETENTION_LOCK,
    current_versions,
    mark_served,
    sweep,
    updates_folders,
)
from tests.unit.updates.conftest import DIM, ROWS, rows_of

GRACE = 3600.0
LATER = time.time() + 2 * GRACE  # a sweep well past the grace of everything written now


def _replace(table: Path, value: float) -> TableWeights:
    """A new version of ``table`` (another size, so surely another version)."""
    np.save(table, np.full((ROWS + 1, DIM), value, np.float32))
    return load_npy(table)


def _age(folder: Path, seconds: float) -> None:
    """Make ``folder`` and what it holds look untouched for ``seconds``."""
    past = time.time() - seconds
    for path in [folder, *folder.iterdir()]:
        os.utime(path, (past, past))


def _written(weights: TableWeights) -> FileUpdateLog:
    log = FileUpdateLog.for_weights(weights)
    log.write(np.array([1]), rows_of(-1))
    return log


def _compactor_lock(log: FileUpdateLog) -> Path:
    """The lock file the update follower's compactor keeps beside ``log`` (named after it)."""
    lock = logs_of(log.table_file) / f"{log.version}.compactor.lock"
    lock.touch()
    return lock


def test_a_replaced_versions_log_goes_after_the_grace(
    tmp_path: Path, weights: TableWeights, log: FileUpdateLog
) -> None:
    log.write(np.array([1]), rows_of(-1))
    new = _written(_replace(weights.path, 7))
    assert sweep(tmp_path, GRACE) == []  # written just now: within the grace
    assert sweep(tmp_path, GRACE, now=LATER) == [log.folder]
    assert not log.folder.exists()
    assert new.folder.exists()  # the current version's log stays, however old


def test_the_current_version_stays_also_compacted(tmp_path: Path, weights: TableWeights) -> None:
    log = FileUpdateLog.for_weights(weights)
    for n in range(ROWS // 8):
        log.write(np.array([n]), rows_of(-n))
    assert fold_into_base(log) is not None  # the file changed, its version did not
    assert current_versions(weights.path) == {log.version}
    assert sweep(tmp_path, GRACE, now=LATER) == []
    assert log.folder.exists()


def test_a_version_a_process_still_serves_is_kept(
    tmp_path: Path, weights: TableWeights, log: FileUpdateLog
) -> None:
    log.write(np.array([1]), rows_of(-1))
    _replace(weights.path, 7)
    _age(log.folder, 2 * GRACE)
    mark_served(log.folder)  # a worker or replica that has not switched yet
    assert sweep(tmp_path, GRACE) == []
    _age(log.folder, 2 * GRACE)  # it switched: no mark since
    assert sweep(tmp_path, GRACE) == [log.folder]


def test_mark_served_of_a_log_not_written_yet_creates_nothing(tmp_path: Path) -> None:
    mark_served(tmp_path / ".updates" / "emb" / "v1")
    assert not (tmp_path / ".updates").exists()
    assert sweep(tmp_path, GRACE, now=LATER) == []
    assert not (tmp_path / ".updates").exists()  # nothing to sweep: nothing written either


def test_a_removed_tables_logs_and_locks_go(
    tmp_path: Path, weights: TableWeights, log: FileUpdateLog
) -> None:
    log.write(np.array([1]), rows_of(-1))
    _compactor_lock(log)
    weights.path.unlink()
    assert sweep(tmp_path, GRACE, now=LATER) == [log.folder]
    assert not logs_of(weights.path).exists()


def test_the_lock_files_of_a_deleted_version_go_with_it(
    tmp_path: Path, weights: TableWeights, log: FileUpdateLog
) -> None:
    log.write(np.array([1]), rows_of(-1))
    old_lock = _compactor_lock(log)
    new_lock = _compactor_lock(_written(_replace(weights.path, 7)))
    assert sweep(tmp_path, GRACE, now=LATER) == [log.folder]
    assert not old_lock.exists() and new_lock.exists()


def test_versioned_and_folder_tables_are_swept_where_their_logs_lie(tmp_path: Path) -> None:
    tables = [tmp_path / "items" / "model.npy", tmp_path / "emb" / "3" / "weights.npy"]
    old_logs = []
    for table in tables:
        table.parent.mkdir(parents=True)
        np.save(table, np.zeros((ROWS, DIM), np.float32))
        old_logs.append(_written(load_npy(table)).folder)
        _written(_replace(table, 7))
    assert set(updates_folders(tmp_path)) == {t.parent / ".updates" for t in tables}
    assert sorted(sweep(tmp_path, GRACE, now=LATER)) == sorted(old_logs)


def test_an_onnx_table_with_external_data_keeps_its_current_log(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from service.repository.demo import gather_onnx_model

    model = onnx.load_from_string(gather_onnx_model(np.ones((ROWS, DIM), np.float32)))
    path = tmp_path / "items.onnx"
    onnx.save_model(
        model, path, save_as_external_data=True, location="items.data", size_threshold=0
    )
    weights = load_onnx(path)
    assert len(weights.version) and (tmp_path / "items.data").exists()
    log = _written(weights)
    assert log.version in current_versions(path)
    assert sweep(tmp_path, GRACE, now=LATER) == []


def test_one_process_sweeps_a_folder_at_a_time(
    tmp_path: Path, weights: TableWeights, log: FileUpdateLog
) -> None:
    log.write(np.array([1]), rows_of(-1))
    _replace(weights.path, 7)
    with held_alone(tmp_path / ".updates" / RETENTION_LOCK) as alone:
        assert alone
        assert sweep(tmp_path, GRACE, now=LATER) == []  # another sweeper holds it: skipped
    assert sweep(tmp_path, GRACE, now=LATER) == [log.folder]


def test_hidden_and_symlinked_folders_are_not_walked(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / ".updates" / "x" / "v1").mkdir(parents=True)
    models = tmp_path / "models"
    (models / ".hidden" / ".updates").mkdir(parents=True)
    models.joinpath("link").symlink_to(outside)
    assert list(updates_folders(models)) == []
    assert sweep(models, GRACE, now=LATER) == []
    assert (outside / ".updates" / "x" / "v1").exists()


def test_an_onnx_tables_external_data_one_folder_down_is_counted(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from service.repository.demo import gather_onnx_model

    model = onnx.load_from_string(gather_onnx_model(np.ones((ROWS, DIM), np.float32)))
    path = tmp_path / "items.onnx"
    (tmp_path / "data").mkdir()
    onnx.save_model(
        model, path, save_as_external_data=True, location="data/items.bin", size_threshold=0
    )
    assert _written(load_onnx(path)).version in current_versions(path)
