"""A reader refreshing while a writer writes and compacts: whole updates only, never back."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from service.repository.npy_loader import load_npy
from service.repository.weights import TableWeights
from service.updates.base_manifest import FileIdentity
from service.updates.catch_up import OverlayStale
from service.updates.compaction import compact_log, fold_into_base
from service.updates.file_log import FileUpdateLog
from service.updates.overlay import UpdateOverlay

ROWS, DIM, UPDATES = 600, 4, 199


def _writer(table: Path, done: threading.Event) -> None:
    log = FileUpdateLog.for_weights(load_npy(table))
    try:
        for k in range(1, UPDATES + 1):
            log.write(np.array([k, k + 200, k + 400]), np.full((3, DIM), k, np.float32))
            if k % 20 == 0:
                compact_log(log)
            if k % 50 == 0:
                fold_into_base(log)
    finally:
        done.set()


def _open(table: Path) -> tuple[TableWeights, UpdateOverlay]:
    """The table as mapped now and its overlay (the identity taken around the mapping)."""
    while True:
        before = FileIdentity.of(table)
        weights = load_npy(table)
        if FileIdentity.of(table) == before:
            return weights, FileUpdateLog.for_weights(weights).overlay(before)


def test_readers_see_whole_updates_in_order_through_compactions(tmp_path: Path) -> None:
    table = tmp_path / "emb.npy"
    np.save(table, np.zeros((ROWS, DIM), np.float32))
    weights, overlay = _open(table)
    done = threading.Event()
    writer = threading.Thread(target=_writer, args=(table, done))
    writer.start()
    ids = np.arange(ROWS)
    newest_seen = np.zeros(ROWS)
    while True:
        finished = done.is_set()
        try:
            overlay.refresh()
        except OverlayStale:
            weights, overlay = _open(table)
        rows = weights.take(ids)
        overlay.apply(ids, rows)
        values = rows[:, 0]
        triples = values[1 : UPDATES + 1], values[201 : 201 + UPDATES], values[401 : 401 + UPDATES]
        assert (triples[0] == triples[1]).all() and (triples[1] == triples[2]).all()
        assert (values >= newest_seen).all(), "a row went back to an older value"
        newest_seen = values
        if finished:
            break
    writer.join()
    assert newest_seen[1 : UPDATES + 1].tolist() == list(range(1, UPDATES + 1))
