"""Bounding a version's accumulated updates without changing any answer.

Two steps, each changing no row any reader serves:

- ``compact_log``: under the log's lock, the newest snapshot and the deltas after it become one
  new snapshot (one row per id, the newest; the last ``REMEMBERED_UPDATE_IDS`` update ids),
  written aside and renamed in; then the files it holds are removed. Readers that listed them
  just before list again (``catch_up``).
- ``fold_into_base`` (``.npy`` tables): the newest snapshot is laid over a copy of the base
  file, written aside (a hidden name beside it), fsynced, recorded in ``base.json`` and renamed
  over the base -- never rewritten in place, so processes still mapping the old file read
  valid rows. The version string and the update sequence are unchanged
  (``base_manifest.served_version``); the next snapshot then holds only newer rows.

Bounds (``compact_if_due``, run in the background by whoever serves the table): at most
``MAX_DELTA_FILES`` deltas accumulate before a snapshot; a snapshot holds at most one row per
id (never more than the table); an ``.npy`` table's snapshot is folded into its base once it
holds ``fold_rows(rows, dim)`` rows (``FOLD_BYTES`` of rows, or an eighth of the table). So
an ``.npy`` overlay holds at most ``fold_rows`` rows plus ``MAX_DELTA_FILES`` updates, and an
ONNX one at most the table's rows plus those updates.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np

from service.repository.weights import file_version
from service.updates.base_manifest import (
    FileIdentity,
    Fold,
    folded_sequence,
    forget_fold,
    record_fold,
    served_version,
)
from service.updates.delta_files import (
    DELTA,
    SNAPSHOT,
    TEMP_PREFIX,
    UpdateFile,
    file_name,
    fsync_folder,
    listed,
    read_file,
    row_count,
)
from service.updates.delta_files import write_file as write_update_file
from service.updates.file_log import FileUpdateLog
from service.updates.layout import logs_of
from service.updates.sorted_rows import newest_rows

REMEMBERED_UPDATE_IDS = 10_000
MAX_DELTA_FILES = 64
# Rows a process's overlay may hold (as float32) before the base is rewritten: each fold
# copies the whole file and every worker maps it again, so fewer, larger folds cost less;
# the overlay's lookups cost the same whatever it holds (``row_versions``).
FOLD_BYTES = 64 << 20
FOLD_TEMP = ".compact-"
COMPACT_LOCK = "compact.lock"


def fold_rows(table_rows: int, dim: int) -> int:
    """Snapshot rows that make an ``.npy`` base worth rewriting: ``FOLD_BYTES`` of float32
    rows, or an eighth of the table if fewer."""
    return max(1, min(FOLD_BYTES // (4 * max(1, dim)), table_rows // 8))


def compact_if_due(log: FileUpdateLog) -> str:
    """Run the compaction steps that are due; what was done (``""``: nothing)."""
    files = listed(log.folder)
    snapshots = [number for number, kind in files if kind == SNAPSHOT]
    newest_snapshot = max(snapshots, default=0)
    deltas = [number for number, kind in files if kind == DELTA and number > newest_snapshot]
    done = []
    if len(deltas) >= MAX_DELTA_FILES:
        compact_log(log)
        done.append("log")
    due = _foldable(log) and _snapshot_rows(log) >= fold_rows(log.shape.rows, log.shape.dim)
    if due and fold_into_base(log) is not None:
        done.append("base")
    return "+".join(done)


def compact_log(log: FileUpdateLog) -> int:
    """Fold the newest snapshot and the deltas after it into one snapshot; its sequence."""
    with log.locked():
        _remove_temps(log.folder)
        files = listed(log.folder)
        if not files:
            return 0
        newest = files[-1][0]
        start = max((number for number, kind in files if kind == SNAPSHOT), default=0)
        if start == newest:
            return newest
        parts = [read_file(log.folder / file_name(n, DELTA)) for n, k in files if n > start]
        folded = folded_sequence(log.folder, FileIdentity.of(log.table_file))
        since = folded
        if start:
            previous = read_file(log.folder / file_name(start, SNAPSHOT))
            if folded < start:  # the base does not hold the snapshot's rows: carry them on
                since = previous.since
                parts.insert(0, previous)
            else:  # the base holds them: only the update ids carry on
                none = previous.ids[:0], previous.rows[:0]
                parts.insert(0, UpdateFile(start, *none, previous.update_ids, folded))
        ids, rows = newest_rows([p.ids for p in parts], [p.rows for p in parts])
        remembered = _last_update_ids(parts)
        write_update_file(log.folder, SNAPSHOT, UpdateFile(newest, ids, rows, remembered, since))
        for number, kind in files:
            if number < newest or kind == DELTA:
                (log.folder / file_name(number, kind)).unlink()
        fsync_folder(log.folder)
        return newest


def _last_update_ids(parts: list[UpdateFile]) -> dict[str, int]:
    """The ``REMEMBERED_UPDATE_IDS`` newest update ids of ``parts``."""
    every: dict[str, int] = {}
    for part in parts:
        every.update(part.update_ids)
    kept = sorted(every.items(), key=lambda item: item[1])[-REMEMBERED_UPDATE_IDS:]
    return dict(kept)


def _remove_temps(folder: Path) -> None:
    """Temp files of writers that died mid-write (every writer holds the lock while writing)."""
    for name in os.listdir(folder):
        if name.startswith(TEMP_PREFIX):
            (folder / name).unlink(missing_ok=True)


def _foldable(log: FileUpdateLog) -> bool:
    return log.table_file.suffix == ".npy"


def _snapshot_rows(log: FileUpdateLog) -> int:
    """Rows the newest snapshot holds beyond the base file (0 without one)."""
    files = listed(log.folder)
    start = max((number for number, kind in files if kind == SNAPSHOT), default=0)
    if not start or folded_sequence(log.folder, FileIdentity.of(log.table_file)) >= start:
        return 0
    return row_count(log.folder / file_name(start, SNAPSHOT))


def fold_into_base(log: FileUpdateLog) -> int | None:
    """Fold every update into a new ``.npy`` base file; the sequence it holds (None: not done).

    Not done when the table file is not an ``.npy`` or was replaced meanwhile (a new version).
    """
    if not _foldable(log):
        return None
    with _only_compactor(log) as alone:
        return _fold(log) if alone else None


def _fold(log: FileUpdateLog) -> int | None:
    """``fold_into_base``, this process being the only compactor of the table file."""
    for leftover in log.table_file.parent.glob(f".{log.table_file.name}{FOLD_TEMP}*"):
        leftover.unlink(missing_ok=True)  # of a compaction that died mid-way
    # The file folded is this one: a file renamed in later fails the identity checks below
    # (never mistaken for this version's base, its rows never mixed with this version's).
    source = FileIdentity.of(log.table_file)
    if served_version(log.table_file, file_version(log.table_file)) != log.version:
        return None  # the file was replaced: a new version, with its own log
    sequence = compact_log(log)
    if not sequence:
        return None
    snapshot = read_file(log.folder / file_name(sequence, SNAPSHOT))
    if folded_sequence(log.folder, source) < snapshot.since:
        return None  # the file lacks rows the snapshot does not carry: not this version's base
    temp = log.table_file.with_name(f".{log.table_file.name}{FOLD_TEMP}{secrets.token_hex(4)}")
    try:
        _write_folded(log.table_file, temp, snapshot)
        with log.locked():
            if FileIdentity.of(log.table_file) != source:
                return None  # replaced or compacted by another process meanwhile
            fold = Fold(FileIdentity.of(temp), sequence)
            record_fold(log.folder, fold)  # durably, before the file it names is renamed in
            # Checked again after the record's fsync: an operator's rename in is overwritten
            # only in the microseconds from this check to ours.
            if FileIdentity.of(log.table_file) != source:
                forget_fold(log.folder, fold)
                return None
            os.replace(temp, log.table_file)
            fsync_folder(log.table_file.parent)
    finally:
        temp.unlink(missing_ok=True)
    return sequence


def _only_compactor(log: FileUpdateLog) -> AbstractContextManager[bool]:
    """Whether this process got the table file's compaction lock (never waits for it)."""
    return held_alone(logs_of(log.table_file) / COMPACT_LOCK)


@contextmanager
def held_alone(lock: Path) -> Iterator[bool]:
    """Whether this open of ``lock`` got its ``flock`` (never waits; released on exit)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)


def _write_folded(base: Path, temp: Path, snapshot: UpdateFile) -> None:
    """A copy of the ``.npy`` at ``base`` with ``snapshot``'s rows laid over, fsynced."""
    # Copied by the kernel (sendfile / copy_file_range): no pass of the table through Python.
    shutil.copyfile(base, temp)
    out = np.load(temp, mmap_mode="r+", allow_pickle=False)
    out[snapshot.ids] = snapshot.rows
    out.flush()
    del out
    descriptor = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
