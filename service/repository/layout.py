"""The whole model repository: flat tables, versioned tables and groups (see versions.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.repository.discovery import (
    LOST_AND_FOUND,
    TableSource,
    discover_tables,
    folder_kind,
    outside_reason,
)
from service.repository.groups import Group, read_group
from service.repository.versioned_tables import VersionedTable, read_versioned_table


@dataclass(frozen=True)
class Repository:
    """What a model repository folder holds, read once (one poll of the watcher)."""

    flat: Mapping[str, TableSource]  # today's tables, one version each (discover_tables)
    tables: Mapping[str, VersionedTable]  # by name
    groups: Mapping[str, Group]  # by group name
    # Names that cannot be served at all, with why: a flat table's problem (as
    # discover_tables names it), a bad table.toml or group.toml, a name defined twice.
    problems: Mapping[str, str]

    def table_names(self) -> list[str]:
        """Every table the repository defines: flat, versioned, and the groups' members."""
        members = [name for group in self.groups.values() for name in group.table_names()]
        return sorted([*self.flat, *self.tables, *members])


def discover_repository(folder: Path) -> Repository:
    """Read ``folder``: every table, versioned table and group, and the problems, by name.

    Hostile-safe like ``discover_tables``: nothing resolving outside ``folder`` is listed or
    read. Table and group names share one namespace (a name defined twice is a problem for
    every definition): ``DIR/emb.toml`` beside a versioned ``DIR/emb/`` is a clash.
    """
    flat, flat_problems = discover_tables(folder)
    problems = dict(flat_problems)
    tables: dict[str, VersionedTable] = {}
    groups: dict[str, Group] = {}
    if not folder.is_dir():
        return Repository(flat, tables, groups, problems)
    root = folder.resolve()
    for entry in sorted(folder.iterdir()):
        # Outside folders are named by discover_tables already; never list them.
        if entry.name.startswith(".") or not entry.is_dir() or outside_reason(entry, root):
            continue
        if entry.name == LOST_AND_FOUND:
            continue
        try:
            kind = folder_kind(entry)
        except PermissionError as exc:
            problems[entry.name] = f"{entry}: cannot be read ({exc.strerror}); fix its permissions"
            continue
        made: VersionedTable | Group | str
        if kind == "versioned":
            made = read_versioned_table(entry, root)
        elif kind == "group":
            made = read_group(entry, root)
        else:
            continue  # flat and mixed folders are discover_tables's
        if isinstance(made, str):
            problems[entry.name] = made
        elif isinstance(made, Group):
            groups[made.name] = made
        else:
            tables[made.name] = made
    return _without_clashes(Repository(flat, tables, groups, problems), folder)


def _without_clashes(repository: Repository, folder: Path) -> Repository:
    """Every name defined more than once, dropped from all its definitions and named."""
    members = {
        name: group.name for group in repository.groups.values() for name in group.table_names()
    }
    counts = Counter(
        [*repository.flat, *repository.tables, *repository.groups, *members, *repository.problems]
    )
    clashes = {name for name, count in counts.items() if count > 1}
    if not clashes:
        return repository
    problems = dict(repository.problems)
    for name in sorted(clashes):
        problems[name] = f"{folder}: {name!r} is defined more than once"
    clashed_groups = clashes | {group for member, group in members.items() if member in clashes}
    for group in clashed_groups & set(repository.groups):
        problems.setdefault(group, f"{folder}: a member of group {group!r} is defined twice")
    return Repository(
        {k: v for k, v in repository.flat.items() if k not in clashes},
        {k: v for k, v in repository.tables.items() if k not in clashes},
        {k: v for k, v in repository.groups.items() if k not in clashed_groups},
        problems,
    )
