"""Deleting the row-update logs of file-table versions that are no longer served.

A file table's log is keyed by version (``layout.log_folder``): when the table file is replaced
(a new version) or removed, the old version's folder would stay forever. ``sweep`` deletes the
log folder of a version that is

- not a current version of its table file (``current_versions``: the version a loader computes
  for the file as it is now, a compacted base keeping its version, ``served_version``), and
- untouched for ``grace_seconds``: no update written, no compaction, and no ``mark_served``
  from a process that still serves it (every serving worker marks its versions' logs more
  often than the grace, ``mark_served``), so a replica or worker that has not switched to the
  new version yet never loses its log.

Where no table file is left for a log (the table or its folder was removed), every version
of it is a candidate. A sweep walks the repository's ``.updates`` folders (beside flat tables,
in table folders and in version folders) and takes each one's ``RETENTION_LOCK`` without
waiting (``compaction.held_alone``): one process at a time sweeps it, the others skip.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from service.repository.compact import scales_path
from service.repository.discovery import TABLE_SUFFIXES
from service.repository.weights import file_version
from service.updates.base_manifest import served_version
from service.updates.compaction import held_alone
from service.updates.layout import UPDATES_FOLDER

log = logging.getLogger(__name__)

RETENTION_LOCK = "retention.lock"
# Where ``.updates`` folders lie below the repository: the root (flat tables), a table or
# group folder, a version folder (``layout``).
UPDATES_DEPTH = 2


def mark_served(folder: Path) -> None:
    """Tell sweeps that this process serves the version whose log is ``folder`` (its mtime,
    now). Nothing when the log does not exist yet (there is nothing to delete)."""
    try:
        os.utime(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:  # e.g. a folder another uid created: the grace still protects it
        log.debug("cannot mark %s as served: %s", folder, exc)


def sweep(models: Path, grace_seconds: float, now: float | None = None) -> list[Path]:
    """Delete the logs of versions neither current nor touched within ``grace_seconds``
    in every ``.updates`` folder of ``models`` that no other process is sweeping; the log
    folders deleted."""
    now = time.time() if now is None else now
    deleted: list[Path] = []
    for updates in updates_folders(models):
        try:
            with held_alone(updates / RETENTION_LOCK) as alone:
                if alone:
                    deleted += _sweep_folder(updates, now - grace_seconds)
        except OSError as exc:  # a read-only or vanishing folder: nothing to do there
            quiet = exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT)
            log.log(logging.DEBUG if quiet else logging.WARNING, "%s not swept: %s", updates, exc)
    return deleted


def updates_folders(models: Path) -> Iterator[Path]:
    """The ``.updates`` folders of the repository (symlinked folders are not followed)."""
    level = [models]
    for _ in range(UPDATES_DEPTH + 1):
        below: list[Path] = []
        for folder in level:
            if (folder / UPDATES_FOLDER).is_dir():
                yield folder / UPDATES_FOLDER
            below += _visible_folders(folder)
        level = below


def _visible_folders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [
                Path(e.path)
                for e in entries
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            ]
    except OSError:  # unreadable (lost+found) or removed meanwhile
        return []


def _sweep_folder(updates: Path, untouched_since: float) -> list[Path]:
    """``sweep`` of one ``.updates`` folder, its lock held."""
    deleted: list[Path] = []
    for logs in _visible_folders(updates):
        table_files = [updates.parent / (logs.name + suffix) for suffix in TABLE_SUFFIXES]
        present = [path for path in table_files if path.exists()]
        try:
            keep = {v for path in present for v in current_versions(path)}
        except OSError:
            continue  # replaced while being read: the next sweep sees it settled
        for folder in _visible_folders(logs):
            if folder.name not in keep and _untouched(folder, untouched_since):
                _remove_log(folder)
                deleted.append(folder)
        if not present and not _visible_folders(logs):
            shutil.rmtree(logs, ignore_errors=True)  # the table is gone: its locks too
    return deleted


def current_versions(table_file: Path) -> set[str]:
    """The versions a loader may compute for ``table_file`` as it is now (as the version of a
    compacted base, ``served_version``). A superset: an ``.npy`` with and without its int8
    scales, an ONNX file alone and with each file beside it that may be its external data."""
    groups: list[tuple[Path, ...]] = [(table_file,)]
    if table_file.suffix == ".npy":
        groups += [(table_file, s) for s in [scales_path(table_file)] if s.exists()]
    else:
        groups += [(table_file, data) for data in _possible_external_data(table_file)]
    computed = {file_version(*group) for group in groups}
    return {served_version(table_file, version) for version in computed}


def _possible_external_data(table_file: Path) -> Iterable[Path]:
    """Files that could hold an ONNX table's external data (its ``location`` is relative to
    the model's folder): any visible file beside it or one folder down that is not a table,
    options or vocabulary file. Reading the model to know would read a whole inline table."""
    not_data = {*TABLE_SUFFIXES, ".toml", ".vocab"}
    folders = [table_file.parent, *_visible_folders(table_file.parent)]
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or Path(name).suffix in not_data:
                    continue
                if entry.is_file():
                    yield Path(entry.path)


def last_touched(folder: Path) -> float:
    """The newest mtime of ``folder`` and what it holds (writes, compactions, ``mark_served``)."""
    newest = folder.stat().st_mtime
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
            except FileNotFoundError:
                continue
    return newest


def _untouched(folder: Path, since: float) -> bool:
    try:
        return last_touched(folder) < since
    except FileNotFoundError:
        return False  # removed meanwhile (another sweep, a compaction)


def _remove_log(folder: Path) -> None:
    """Delete a version's log and the lock files named after it beside it (the compactor's
    ``<version>.<name>.lock``)."""
    log.info("deleting the row-update log %s: its version is no longer served", folder)
    shutil.rmtree(folder, ignore_errors=True)
    for entry in folder.parent.iterdir():
        name = entry.name
        if name.startswith(folder.name + ".") and name.endswith(".lock") and entry.is_file():
            entry.unlink(missing_ok=True)
