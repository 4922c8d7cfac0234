"""The update log of one file-table version, kept in the model repository beside the table.

Its folder (``layout.log_folder``) holds immutable update files (``delta_files``), ``lock``
(``fcntl.flock``: writers take sequences one after another, in one process or many) and
``base.json`` (``base_manifest``). Every process reading the same repository sees the same log.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import BackendUnavailable
from service.repository.weights import TableWeights
from service.updates.base_manifest import FileIdentity, folded_sequence, served_version
from service.updates.delta_files import (
    DELTA,
    SNAPSHOT,
    UpdateFile,
    durable_folder,
    file_name,
    listed,
    read_update_ids,
    write_file,
)
from service.updates.layout import LOCK_FILE, log_folder
from service.updates.overlay import UpdateOverlay
from service.updates.validation import NotUpdatable, RowUpdate, WriteResult, check_update

# A repository mounted read-only (or not ours): file tables there cannot take updates.
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
# Out of space: the same update may succeed later (retry with the same update_id).
_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class TableShape:
    """What an update is checked against: the version's rows, dim and stored dtype."""

    rows: int
    dim: int
    stored_dtype: str


def _unwritable(folder: Path, exc: OSError) -> Exception:
    """The error to answer for an update log that could not be written (nothing applied)."""
    if exc.errno in _READ_ONLY:
        return NotUpdatable(
            f"{folder}: the update log cannot be written ({exc.strerror}); file tables take "
            "updates only from a model repository mounted read-write"
        )
    if exc.errno in _FULL:
        return BackendUnavailable(
            f"{folder}: the update log cannot be written ({exc.strerror}); retry with the "
            "same update_id once there is room (it is applied once)"
        )
    return exc


class FileUpdateLog:
    """Writes the updates of one table version durably; ``overlay()`` reads them back."""

    def __init__(self, table_file: Path, version: str, shape: TableShape) -> None:
        self.table_file = table_file
        self.version = version
        self.shape = shape
        self.folder = log_folder(table_file, version)
        # update_id -> sequence, as of the files up to ``_indexed`` (refreshed under the lock).
        self._update_ids: dict[str, int] = {}
        self._indexed = 0

    @classmethod
    def for_weights(cls, weights: TableWeights) -> FileUpdateLog:
        """The log of the version ``weights`` were loaded as (a compacted base keeps it)."""
        version = served_version(weights.path, weights.version)
        shape = TableShape(weights.rows, weights.dim, weights.stored_dtype)
        return cls(weights.path, version, shape)

    def overlay(self, base: FileIdentity | None = None) -> UpdateOverlay:
        """A refreshed overlay for a process serving the base file of identity ``base``.

        ``base``: the identity of the file as mapped (``FileIdentity.of`` taken before
        mapping it); default, the file as it is now. Updates a compacted base holds are
        skipped.
        """
        served = base if base is not None else FileIdentity.of(self.table_file)
        skip = folded_sequence(self.folder, served)
        overlay = UpdateOverlay(self.folder, self.shape.dim, skip, self.shape.rows)
        overlay.refresh()
        return overlay

    def write(self, ids: np.ndarray, rows: np.ndarray, update_id: str | None = None) -> WriteResult:
        """Check, then durably write one update; its sequence once it is on disk.

        Raises the ``validation`` errors (nothing written). The same ``update_id`` again
        answers the first update's sequence and writes nothing.
        """
        shape = self.shape
        update = check_update(ids, rows, shape.rows, shape.dim, shape.stored_dtype, update_id)
        try:
            return self._write(update, update_id)
        except OSError as exc:
            raise _unwritable(self.folder, exc) from exc

    def _write(self, update: RowUpdate, update_id: str | None) -> WriteResult:
        with self.locked():
            files = listed(self.folder)
            self._index(files)
            if update_id is not None and update_id in self._update_ids:
                return WriteResult(self._update_ids[update_id], update.ids.size, False)
            sequence = (files[-1][0] if files else 0) + 1
            known = {update_id: sequence} if update_id is not None else {}
            content = UpdateFile(sequence, update.ids, update.rows, known, sequence - 1)
            write_file(self.folder, DELTA, content)
        return WriteResult(sequence, update.ids.size, True)

    def sequence(self) -> int:
        """The newest update's sequence (0: none yet)."""
        files = listed(self.folder)
        return files[-1][0] if files else 0

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the log's lock (blocking): one writer or compaction at a time, in any process."""
        durable_folder(self.folder)
        descriptor = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def _index(self, files: list[tuple[int, str]]) -> None:
        """Bring the update-id index up to the newest file (only files not indexed yet).

        A snapshot remembers the last ``compaction.REMEMBERED_UPDATE_IDS`` ids before it;
        the deltas after the newest snapshot add theirs.
        """
        if not files or files[-1][0] <= self._indexed:
            return
        snapshots = [number for number, kind in files if kind == SNAPSHOT]
        start = self._indexed
        if snapshots and max(snapshots) > self._indexed:
            start = max(snapshots)
            self._update_ids = read_update_ids(self.folder / file_name(start, SNAPSHOT))
        for number, kind in files:
            if kind == DELTA and number > start:
                self._update_ids.update(read_update_ids(self.folder / file_name(number, DELTA)))
        self._indexed = files[-1][0]
