"""Where a file table's updates live in the model repository (one rule for every table kind).

The log of table file ``F`` at version ``V`` is the folder ``F.parent/.updates/<F.stem>/<V>/``
-- for a flat table ``DIR/.updates/<name>/<V>/``, for a version folder
``DIR/<name>/<N>/.updates/<stem>/<V>/``, for a group member ``DIR/<group>/<N>/.updates/<stem>/<V>/``.
The folder is hidden, so discovery (which skips hidden entries) never takes it for a table or
a version, and keyed by the version string, so a replaced file (a new version) starts from
its own rows; the logs of versions no longer served are deleted after a grace (``retention``).
"""

from __future__ import annotations

from pathlib import Path

UPDATES_FOLDER = ".updates"
LOCK_FILE = "lock"


def logs_of(table_file: Path) -> Path:
    """The folder holding the logs of every version of ``table_file``."""
    return table_file.parent / UPDATES_FOLDER / table_file.stem


def log_folder(table_file: Path, version: str) -> Path:
    """Where the updates of ``table_file`` at ``version`` live."""
    return logs_of(table_file) / version


def stale_logs(table_file: Path, keep: set[str]) -> list[Path]:
    """The log folders of ``table_file`` for versions not in ``keep`` (safe to delete)."""
    try:
        return sorted(p for p in logs_of(table_file).iterdir() if p.is_dir() and p.name not in keep)
    except FileNotFoundError:
        return []
