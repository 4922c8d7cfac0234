"""The in-memory overlay: all of an update or none, the newest row wins, nothing when empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.repository.npy_loader import load_npy
from service.repository.weights import TableWeights
from service.updates import overlay as overlay_module
from service.updates import row_versions, sorted_rows
from service.updates.file_log import FileUpdateLog
from service.updates.overlay import apply_state
from tests.unit.updates.conftest import DIM, rows_of


def test_with_no_update_there_is_nothing_to_apply(log: FileUpdateLog) -> None:
    overlay = log.overlay()
    assert overlay.state is None and overlay.sequence == 0
    rows = np.ones((2, DIM), np.float32)
    overlay.apply(np.array([1, 2]), rows)
    assert (rows == 1).all()
    assert overlay.refresh().size == 0


def test_refresh_returns_the_changed_ids_and_swaps_whole_updates(
    weights: TableWeights, log: FileUpdateLog
) -> None:
    overlay = log.overlay()
    log.write(np.array([5, 7, 9]), rows_of(-1, 3))
    before = weights.take(np.array([5, 7, 9]))
    overlay.apply(np.array([5, 7, 9]), before)  # not refreshed yet: none of it
    assert before[:, 0].tolist() == [20, 28, 36]
    assert overlay.refresh().tolist() == [5, 7, 9]
    after = weights.take(np.array([[5, 7], [9, 1]]))
    overlay.apply(np.array([[5, 7], [9, 1]]), after)  # any shape of ids
    assert after[..., 0].tolist() == [[-1, -1], [-1, 4]]
    assert overlay.sequence == 1 and overlay.rows == 3


def test_the_higher_sequence_wins_whatever_the_order_read(log: FileUpdateLog) -> None:
    late = log.overlay()
    log.write(np.array([1, 2]), rows_of(-1, 2))
    early = log.overlay()
    log.write(np.array([2, 3]), rows_of(-2, 2))
    early.refresh()
    for overlay in (late, early, log.overlay()):
        late.refresh()
        rows = np.zeros((3, DIM), np.float32)
        overlay.apply(np.array([1, 2, 3]), rows)
        assert rows[:, 0].tolist() == [-1, -2, -2]


KINDS = pytest.mark.parametrize("dense_max_rows", [0, 1 << 20], ids=["sorted", "dense"])


@KINDS
def test_many_refreshes_change_no_answer(
    log: FileUpdateLog, monkeypatch: pytest.MonkeyPatch, dense_max_rows: int
) -> None:
    monkeypatch.setattr(sorted_rows, "RECENT_ROWS", 2)  # recent rows settle
    monkeypatch.setattr(row_versions, "MIN_SLOTS", 2)  # slots run out: the store is rebuilt
    monkeypatch.setattr(overlay_module, "DENSE_MAX_ROWS", dense_max_rows)
    overlay = log.overlay()
    for n in range(10):
        log.write(np.array([n, n + 1]), rows_of(n, 2))
        overlay.refresh()
    kind = row_versions.DenseState if dense_max_rows else sorted_rows.SortedState
    assert isinstance(overlay.state, kind) and overlay.rows == 11
    rows = np.zeros((11, DIM), np.float32)
    overlay.apply(np.arange(11), rows)
    assert rows[:, 0].tolist() == [*range(10), 9]  # id k: last written by update k


@KINDS
def test_a_state_taken_before_a_refresh_keeps_its_rows(
    log: FileUpdateLog, monkeypatch: pytest.MonkeyPatch, dense_max_rows: int
) -> None:
    """A request patches with the state it planned with, however many refreshes (and store
    rebuilds) came after: never a row of a later update."""
    monkeypatch.setattr(row_versions, "MIN_SLOTS", 2)
    monkeypatch.setattr(overlay_module, "DENSE_MAX_ROWS", dense_max_rows)
    overlay = log.overlay()
    states = []
    for n in range(6):
        log.write(np.array([1, 2 + n]), rows_of(10 * (n + 1), 2))
        overlay.refresh()
        states.append(overlay.state)
    for n, state in enumerate(states):
        rows = np.zeros((3, DIM), np.float32)
        apply_state(state, np.array([1, 2, 2 + n]), rows)
        first = 10 * (n + 1)
        assert rows[:, 0].tolist() == [first, 10, first]  # id 2: update 0 wrote it


def test_dense_refresh_installs_in_place_until_slots_run_out(log: FileUpdateLog) -> None:
    overlay = log.overlay()
    log.write(np.array([3]), rows_of(1, 1))
    overlay.refresh()
    first = overlay.state
    assert isinstance(first, row_versions.DenseState)
    log.write(np.array([3, 4]), rows_of(2, 2))
    overlay.refresh()
    second = overlay.state
    assert isinstance(second, row_versions.DenseState)
    assert second.store is first.store and second.used == 3 and second.rows == 2


def test_float16_tables_serve_the_stored_rounding(tmp_path: Path) -> None:
    path = tmp_path / "half.npy"
    np.save(path, np.zeros((4, 2), np.float16))
    log = FileUpdateLog.for_weights(load_npy(path))
    log.write(np.array([1]), np.full((1, 2), 0.1, np.float32))
    rows = np.zeros((1, 2), np.float32)
    log.overlay().apply(np.array([1]), rows)
    assert rows[0, 0] == np.float32(np.float16(0.1))


@KINDS
def test_rows_updated_between_a_range_at_a_state(
    log: FileUpdateLog, monkeypatch: pytest.MonkeyPatch, dense_max_rows: int
) -> None:
    """What a neighbour search scores in place of a block's rows: the ids of the block the
    state updated, with their rows at that state (not a later one)."""
    from service.updates.overlay import rows_updated_between

    monkeypatch.setattr(overlay_module, "DENSE_MAX_ROWS", dense_max_rows)
    overlay = log.overlay()
    log.write(np.array([5, 50, 95]), rows_of(1, 3))
    overlay.refresh()
    first = overlay.state
    assert first is not None
    log.write(np.array([50, 60]), rows_of(2, 2))
    overlay.refresh()
    ids, rows = rows_updated_between(first, 40, 96, DIM)
    assert ids.tolist() == [50, 95] and rows[:, 0].tolist() == [1, 1]
    assert overlay.state is not None
    ids, rows = rows_updated_between(overlay.state, 0, 61, DIM)
    assert ids.tolist() == [5, 50, 60] and rows[:, 0].tolist() == [1, 2, 2]


@KINDS
def test_no_ids_patch_nothing(
    log: FileUpdateLog, monkeypatch: pytest.MonkeyPatch, dense_max_rows: int
) -> None:
    """An empty lookup of an updated table (``ids: []``) is an empty answer, not an error."""
    monkeypatch.setattr(overlay_module, "DENSE_MAX_ROWS", dense_max_rows)
    overlay = log.overlay()
    log.write(np.array([1]), rows_of(1.0))
    overlay.refresh()
    assert (
        apply_state(overlay.state, np.empty(0, np.int64), np.empty((0, DIM), np.float32)).size == 0
    )
    assert (
        apply_state(
            overlay.state, np.empty((0, 3), np.int64), np.empty((0, 3, DIM), np.float32)
        ).size
        == 0
    )
