"""Compaction bounds accumulated updates and changes no answer, version or sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.repository.layout import discover_repository
from service.repository.npy_loader import load_npy
from service.repository.weights import TableWeights
from service.updates import compaction
from service.updates.base_manifest import (
    is_compacted_base,
    is_compaction_of,
    read_folds,
    served_version,
)
from service.updates.catch_up import OverlayStale
from service.updates.compaction import compact_if_due, compact_log, fold_into_base
from service.updates.delta_files import DELTA, SNAPSHOT, listed
from service.updates.file_log import FileUpdateLog, TableShape
from tests.unit.updates.conftest import ROWS, rows_of, served

IDS = list(range(0, ROWS, 7))


def _write_some(log: FileUpdateLog, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        log.write(np.array([n % 10, 50 + n]), rows_of(-n, 2), f"u{n}")


def _replayed(weights: TableWeights, count: int) -> np.ndarray:
    """The table as ``_write_some`` leaves it after ``count`` updates."""
    table = weights.block(0, ROWS).copy()
    for n in range(count):
        table[[n % 10, 50 + n]] = -n
    return table


def test_a_log_compaction_changes_no_answer(weights: TableWeights, log: FileUpdateLog) -> None:
    _write_some(log, 5)
    reader = log.overlay()
    before = served(weights, log, IDS)
    assert compact_log(log) == 5
    assert listed(log.folder) == [(5, SNAPSHOT)]
    assert (served(weights, log, IDS) == before).all()
    _write_some(log, 3, 5)
    assert log.sequence() == 8
    reader.refresh()  # deltas 1..5 are gone: caught up through the snapshot
    assert reader.sequence == 8
    assert log.write(np.array([1]), rows_of(5), "u2").sequence == 3  # ids remembered


def test_a_reader_listing_during_compaction_catches_up(
    weights: TableWeights, log: FileUpdateLog
) -> None:
    _write_some(log, 3)
    reader = log.overlay()
    _write_some(log, 3, 3)
    compact_log(log)
    _write_some(log, 2, 6)
    reader.refresh()
    fresh = log.overlay()
    ids = np.array(IDS)
    one, two = weights.take(ids), weights.take(ids)
    reader.apply(ids, one)
    fresh.apply(ids, two)
    assert (one == two).all() and reader.sequence == fresh.sequence == 8


def test_update_ids_are_remembered_up_to_the_bound(
    log: FileUpdateLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "REMEMBERED_UPDATE_IDS", 3)
    _write_some(log, 5)
    compact_log(log)
    restarted = FileUpdateLog(log.table_file, log.version, log.shape)
    assert not restarted.write(np.array([1]), rows_of(0), "u4").applied
    assert restarted.write(np.array([1]), rows_of(0), "u0").applied  # forgotten: applied again


def test_folding_into_the_base_keeps_answers_version_and_sequence(
    tmp_path: Path, weights: TableWeights, log: FileUpdateLog
) -> None:
    _write_some(log, 4)
    old_reader = log.overlay()
    before = served(weights, log, IDS)
    assert fold_into_base(log) == 4
    compacted = load_npy(tmp_path / "emb.npy")
    assert compacted.version != weights.version  # the file changed...
    assert (
        served_version(compacted.path, compacted.version) == weights.version
    )  # ...not the version
    assert is_compaction_of(compacted.path, weights.version)
    assert not is_compaction_of(compacted.path, "another")
    relogged = FileUpdateLog.for_weights(compacted)
    assert relogged.folder == log.folder and relogged.sequence() == 4
    fresh = relogged.overlay()
    assert fresh.state is None and fresh.sequence == 4  # the base holds every update
    assert (served(compacted, relogged, IDS) == before).all()
    # A process still mapping the old file keeps reading valid rows with its overlay.
    rows = weights.take(np.array(IDS))
    old_reader.apply(np.array(IDS), rows)
    assert (rows == before).all()
    assert list(discover_repository(tmp_path).flat) == ["emb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".updates", "emb.npy"]


def test_after_a_fold_snapshots_hold_only_newer_rows(
    tmp_path: Path, weights: TableWeights, log: FileUpdateLog
) -> None:
    _write_some(log, 4)
    stale_reader = log.overlay()
    _write_some(log, 2, 4)  # stale_reader has not read these
    fold_into_base(log)
    compacted = load_npy(tmp_path / "emb.npy")
    relogged = FileUpdateLog.for_weights(compacted)
    before = served(compacted, relogged, IDS)
    _write_some(log, 3, 6)
    compact_log(relogged)
    after = relogged.overlay()
    assert after.rows == 6 and after.sequence == 9  # the 3 new updates' rows only
    rows = compacted.take(np.array(IDS))
    after.apply(np.array(IDS), rows)
    assert (rows == _replayed(weights, 9)[IDS]).all()
    assert (before == _replayed(weights, 6)[IDS]).all()
    with pytest.raises(OverlayStale):
        stale_reader.refresh()  # updates 5..6 live only in the new base: load it again


def test_compaction_runs_when_due(log: FileUpdateLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compaction, "MAX_DELTA_FILES", 3)
    _write_some(log, 2)
    assert compact_if_due(log) == ""
    _write_some(log, 1, 2)
    assert compact_if_due(log) == "log"
    monkeypatch.setattr(compaction, "FOLD_BYTES", 4 * 4 * 4)  # 4 rows of 4 floats
    _write_some(log, 3, 3)
    assert compact_if_due(log) == "log+base"
    assert [kind for _, kind in listed(log.folder)] == [SNAPSHOT]


def test_onnx_tables_compact_their_log_but_never_their_file(tmp_path: Path) -> None:
    (tmp_path / "emb.onnx").write_bytes(b"a graph")
    log = FileUpdateLog(tmp_path / "emb.onnx", "v1", TableShape(ROWS, 4, "float32"))
    _write_some(log, 3)
    assert fold_into_base(log) is None
    assert compact_log(log) == 3
    assert [kind for _, kind in listed(log.folder)] == [SNAPSHOT]
    assert DELTA not in {kind for _, kind in listed(log.folder)}


def test_a_fold_does_not_touch_a_replaced_file(tmp_path: Path, log: FileUpdateLog) -> None:
    _write_some(log, 2)
    np.save(tmp_path / "emb.npy", np.ones((ROWS, 4), np.float32))
    assert fold_into_base(log) is None
    assert (np.load(tmp_path / "emb.npy") == 1).all()


@pytest.mark.parametrize("moment", ["after the log compaction", "after the fold's record"])
def test_a_file_renamed_in_during_a_fold_is_left_alone(
    tmp_path: Path, log: FileUpdateLog, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """An operator pushing a new file while a fold runs: the fold gives up, the new file is
    served as what it is (a new version), never recorded as this version's compacted base."""
    _write_some(log, 2)

    def push() -> None:
        temp = tmp_path / "pushed.npy"
        np.save(temp, np.full((ROWS, 4), 7.0, np.float32))
        temp.replace(tmp_path / "emb.npy")

    if moment == "after the log compaction":
        real = compaction.compact_log
        monkeypatch.setattr(compaction, "compact_log", lambda log: (real(log), push())[0])
    else:
        record = compaction.record_fold
        monkeypatch.setattr(
            compaction, "record_fold", lambda folder, fold: (record(folder, fold), push())[0]
        )
    assert fold_into_base(log) is None
    assert (np.load(tmp_path / "emb.npy") == 7).all()
    assert not is_compacted_base(tmp_path / "emb.npy")
    assert read_folds(log.folder) == []


def test_a_compacted_base_is_not_scanned_again_and_a_plain_file_is(
    log: FileUpdateLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker maps the base again after each fold: its rows were checked (the base's
    when it was loaded, each update's when it was written), so the NaN/Inf scan that reads the
    whole table is skipped for a file a compaction wrote (recorded in ``base.json``)."""
    from service.repository import npy_loader
    from service.repository.discovery import TableSource
    from service.tables import table_builder

    scanned: list[Path] = []
    monkeypatch.setattr(npy_loader, "check_finite", lambda array, path: scanned.append(path))
    source = TableSource("emb", log.table_file, "npy", None)
    assert not is_compacted_base(log.table_file)
    table_builder._load_weights(source)
    assert scanned == [log.table_file]
    _write_some(log, 3)
    assert fold_into_base(log) == 3 and is_compacted_base(log.table_file)
    table_builder._load_weights(source)
    assert scanned == [log.table_file]
