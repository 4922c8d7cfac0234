"""``base.json``: which base files of a table version are compactions, and what they hold.

When a compaction folds a version's updates into its ``.npy`` file, the file's size and mtime
change, so ``file_version`` (the version string) would change and a watcher comparing
identities would see a new version. The manifest in the version's log folder records each
compacted base file's identity ``(size, mtime_ns)`` and the sequence of updates it holds,
written (durably) *before* the file is renamed in. So:

- ``served_version(file, computed)`` gives the version the file still belongs to;
- ``is_compaction_of(file, version)`` tells a watcher "the same version, compacted";
- ``folded_sequence(folder, file)`` says which updates the base already holds (the overlay
  skips them).

The last ``KEPT_FOLDS`` compactions are kept, so a crash between writing the manifest and
renaming the file leaves the previous compacted base recognised.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from service.updates.delta_files import durable_write
from service.updates.layout import logs_of

MANIFEST = "base.json"
KEPT_FOLDS = 8


@dataclass(frozen=True)
class FileIdentity:
    """What tells one base file from another: its size and modification time."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        stat = os.stat(path)
        return cls(stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class Fold:
    """One compacted base file and the sequence of updates it holds."""

    base: FileIdentity
    sequence: int


def read_folds(folder: Path) -> list[Fold]:
    """The compactions recorded in ``folder`` (a version's log), oldest first."""
    try:
        raw = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return []
    return [
        Fold(FileIdentity(int(f["size"]), int(f["mtime_ns"])), int(f["sequence"]))
        for f in raw["folds"]
    ]


def record_fold(folder: Path, fold: Fold) -> None:
    """Add ``fold`` to the manifest (durably), keeping the last ``KEPT_FOLDS``."""
    _write_folds(folder, [*read_folds(folder), fold][-KEPT_FOLDS:])


def forget_fold(folder: Path, fold: Fold) -> None:
    """Take ``fold`` (recorded, never renamed in) out of the manifest again."""
    _write_folds(folder, [f for f in read_folds(folder) if f != fold])


def _write_folds(folder: Path, folds: list[Fold]) -> None:
    entries = [
        {"size": f.base.size, "mtime_ns": f.base.mtime_ns, "sequence": f.sequence} for f in folds
    ]
    durable_write(folder / MANIFEST, [json.dumps({"folds": entries}).encode()])


def folded_sequence(folder: Path, identity: FileIdentity) -> int:
    """The updates a base file of ``identity`` holds (0 unless it is a compaction of this log)."""
    return max((f.sequence for f in read_folds(folder) if f.base == identity), default=0)


def served_version(table_file: Path, computed: str) -> str:
    """The version ``table_file`` belongs to: ``computed`` unless it is a compacted base.

    ``computed`` is ``TableWeights.version`` (``file_version`` of the file): a compaction
    changes it, the version it stands for does not.
    """
    logs = logs_of(table_file)
    try:
        versions = sorted(entry.name for entry in logs.iterdir() if entry.is_dir())
    except FileNotFoundError:
        return computed
    identity = FileIdentity.of(table_file)
    for version in versions:
        if any(f.base == identity for f in read_folds(logs / version)):
            return version
    return computed


def is_compacted_base(table_file: Path) -> bool:
    """Whether ``table_file`` is a base file a compaction wrote (recorded in a manifest): its
    rows are a checked base with checked updates laid over them."""
    return served_version(table_file, "") != ""


def is_compaction_of(table_file: Path, version: str) -> bool:
    """Whether ``table_file`` now is ``version`` compacted (not a new version)."""
    return served_version(table_file, "") == version
