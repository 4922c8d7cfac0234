"""What one table or group serves, as ONE immutable snapshot swapped by one reference.

A ``VersionSet`` holds every served version of a table (version string -> ``ServedTable``), its
labels and its default; a ``GroupSet`` holds every served version of a group (version string
-> member stem -> ``ServedTable``). The registry replaces a snapshot whole, in one assignment on
the event loop, so a request that picked its version holds that ``ServedTable`` (or that group
version's members) to its end: it never sees half of a flip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.errors import VersionNotFound
from service.tables.served_table import ServedTable


def _detail(versions: Mapping[str, object], labels: Mapping[str, str]) -> dict[str, object]:
    """``404 version_not_found``'s detail: the versions (ascending) and labels served."""
    return {"versions": sorted_versions(versions), "labels": dict(sorted(labels.items()))}


def sorted_versions(versions: Mapping[str, object]) -> list[str]:
    """Version strings ascending: numbers by value (``"9"`` before ``"10"``), others after."""
    return sorted(versions, key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))


def _pick_key(
    kind: str, name: str, versions: Mapping[str, object], labels: Mapping[str, str], selector: str
) -> str:
    """The served version ``selector`` names (a version string or a label), else 404."""
    if selector in versions:
        return selector
    number = labels.get(selector)
    if number is not None:
        return number
    raise VersionNotFound(
        f"{kind} {name!r} serves no version or label {selector!r}",
        {kind: name, **_detail(versions, labels)},
    )


@dataclass(frozen=True, slots=True)
class VersionSet:
    """The served versions of one table: version string -> table, labels, the default."""

    name: str
    tables: Mapping[str, ServedTable]
    labels: Mapping[str, str]  # label -> version string (each one served)
    default: ServedTable

    @classmethod
    def single(cls, table: ServedTable) -> VersionSet:
        """A flat table (or a Redis table at its current version): one version, no labels."""
        return cls(table.name, {table.served_version: table}, {}, table)

    def pick(self, selector: str | None) -> ServedTable:
        """The table a request's ``version=`` names (None: the default); 404 otherwise."""
        if selector is None:
            return self.default
        return self.tables[_pick_key("table", self.name, self.tables, self.labels, selector)]

    def versions(self) -> list[str]:
        """The served versions, ascending."""
        return sorted_versions(self.tables)

    def detail(self) -> dict[str, object]:
        """``{"versions": [...], "labels": {...}}``."""
        return _detail(self.tables, self.labels)


@dataclass(frozen=True, slots=True)
class GroupVersion:
    """One served version of a group: every member at that version."""

    group: str
    version: str
    members: Mapping[str, ServedTable]  # stem -> table


@dataclass(frozen=True, slots=True)
class GroupSet:
    """The served versions of one group: version string -> members, labels, the default."""

    name: str
    members: tuple[str, ...]  # stems, sorted
    versions: Mapping[str, GroupVersion]
    labels: Mapping[str, str]
    default: str

    def pick(self, selector: str | None) -> GroupVersion:
        """The group version a request's ``version=`` names (None: the default); else 404."""
        if selector is None:
            return self.versions[self.default]
        return self.versions[_pick_key("group", self.name, self.versions, self.labels, selector)]

    def member_set(self, stem: str) -> VersionSet:
        """Member ``stem`` as a table: the group's versions and labels, the group's default."""
        tables = {version: served.members[stem] for version, served in self.versions.items()}
        return VersionSet(f"{self.name}.{stem}", tables, self.labels, tables[self.default])

    def info(self) -> dict[str, object]:
        """API.md's ``GroupInfo``."""
        return {
            "name": self.name,
            "tables": [f"{self.name}.{stem}" for stem in self.members],
            **_detail(self.versions, self.labels),
            "version": self.default,
        }
