"""A versioned table: ``DIR/<name>/table.toml`` and numbered folders ``DIR/<name>/<N>/``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.errors import TableLoadError
from service.repository.discovery import TABLE_NAME, TableSource, outside_reason, table_files
from service.repository.options import TableOptions
from service.repository.version_folders import (
    Versioned,
    existing,
    version_entries,
    version_folders,
    version_identity,
    without_broken,
)
from service.repository.version_policy import read_versioned_options

OPTIONS_FILE = "table.toml"
VOCAB_FILE = "table.vocab"


@dataclass(frozen=True)
class TableVersion:
    """One loadable-looking version folder ``DIR/<name>/<N>/`` of a versioned table."""

    number: int
    # The table file of the version: ``name`` is the table's, ``version`` the number,
    # ``options_path`` the shared table.toml (build with ``VersionedTable.options``: that file
    # also holds the policy, which ``read_table_options`` refuses unless ``versioned=True``).
    source: TableSource
    identity: str  # changes when the version's files or the table options change


@dataclass(frozen=True, kw_only=True)
class VersionedTable(Versioned):
    """A table with numbered versions; ``resolve()`` says which are served."""

    options_path: Path | None  # DIR/<name>/table.toml
    options: TableOptions  # of every version
    versions: Mapping[int, TableVersion]  # the version folders that look loadable

    @property
    def identities(self) -> dict[int, str]:
        return {number: version.identity for number, version in self.versions.items()}


def read_versioned_table(folder: Path, root: Path) -> VersionedTable | str:
    """The versioned table of ``folder`` (inside ``root``), or why it cannot be one at all.

    A bad ``table.toml`` (or one outside the repository) fails the table; a bad version
    folder only holds that version back (``broken``).
    """
    name = folder.name
    if not TABLE_NAME.match(name):
        return f"{folder}: not a valid table name"
    options_path = existing(folder / OPTIONS_FILE)
    shared_vocab = existing(folder / VOCAB_FILE)
    for path in (options_path, shared_vocab):
        if path is not None and (reason := outside_reason(path, root)) is not None:
            return reason
    try:
        policy, options = read_versioned_options(options_path)
    except TableLoadError as exc:
        return str(exc)
    readable, fields = version_folders(folder, root, policy)
    made = {
        number: _table_version(name, number, path, root, options_path, options, shared_vocab)
        for number, path in readable.items()
    }
    versions = without_broken(made, fields["broken"])
    return VersionedTable(**fields, options_path=options_path, options=options, versions=versions)


def _table_version(
    name: str,
    number: int,
    folder: Path,
    root: Path,
    options_path: Path | None,
    options: TableOptions,
    shared_vocab: Path | None,
) -> TableVersion | str:
    """Version ``number`` of table ``name``: one table file, or why not."""
    try:
        entries = version_entries(folder, root)
        if isinstance(entries, str):
            return entries
        files = table_files(folder)
        if not files:
            return f"{folder}: holds no table file (.npy or .onnx)"
        if len(files) > 1:
            return f"{folder}: holds {len(files)} table files, expected one"
        vocab = existing(folder / VOCAB_FILE) or shared_vocab
        source = TableSource(
            name, files[0], files[0].suffix[1:], options_path, vocab, version=number
        )
        shared = [path for path in (shared_vocab,) if path is not None and path == vocab]
        identity = version_identity([*entries, *shared], [options])
    except OSError as exc:  # changed while read (a copy in progress): seen again next poll
        return f"{folder}: cannot be read: {exc}"
    return TableVersion(number, source, identity)
