"""Serving versioned tables and groups: follow the repository, load, flip, retire.

Each poll (and once at start-up) ``sync`` reads the repository layer's view
(``discover_repository``) and, for every versioned table and group, runs the loop of
service/repository/versions.py: resolve the policy over the versions present (less those held
back); load what is served and not loaded; hold back each version that fails (``HeldBack``,
by identity) and resolve again; then install the new snapshot in one step
(``InstalledTables.install_versions`` / ``install_group``) and retire the versions that left
(their in-flight requests finish first). A new or changed identity is loaded once it held
still one poll (a copy in progress), as flat tables are.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from service.errors import TableLoadError
from service.repository.groups import Group
from service.repository.layout import Repository
from service.repository.versioned_tables import VersionedTable
from service.repository.versions import HeldBack, Resolution, version_changes
from service.tables.installed_tables import InstalledTables
from service.tables.served_table import ServedTable
from service.tables.table_builder import TableBuilder
from service.tables.table_updates import catch_up
from service.tables.version_sets import GroupSet, GroupVersion, VersionSet

log = logging.getLogger(__name__)

Built = ServedTable | dict[str, ServedTable]  # a table's version, or a group version's members


@dataclasses.dataclass
class _Followed:
    """What this worker knows of one versioned table or group between polls."""

    seen: dict[int, str] = dataclasses.field(default_factory=dict)  # identities, last poll
    loaded: dict[int, tuple[str, Built]] = dataclasses.field(default_factory=dict)
    held: HeldBack = dataclasses.field(default_factory=HeldBack)
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)  # served last time


class VersionedServing:
    """The versioned tables and groups of one worker."""

    def __init__(
        self, installed: InstalledTables, builder: TableBuilder, drain_seconds: float
    ) -> None:
        self._installed = installed
        self._builder = builder
        self._drain_seconds = drain_seconds
        self._followed: dict[str, _Followed] = {}

    def follows(self, name: str) -> bool:
        """True when ``name`` is a versioned table, a group, or a group's member."""
        return name in self._followed or name in self._installed.member_of

    def forget(self, name: str, version: int | None) -> None:
        """Load ``name`` (a versioned table or group) again at the next sync: its version
        ``version`` (all when None) and their held-back failures (the admin reload)."""
        followed = self._followed.get(name)
        if followed is None:
            return
        for number in [version] if version is not None else list(followed.loaded):
            followed.held.entries.pop(number, None)
            entry = followed.loaded.get(number)
            if entry is not None:
                followed.loaded[number] = ("", entry[1])  # reloaded, then this one retires

    async def sync(self, repository: Repository, first: bool = False) -> None:
        """Follow every versioned table and group of ``repository`` (``first``: at start-up,
        where nothing is half copied yet, load at once)."""
        items: list[VersionedTable | Group] = [*repository.tables.values()]
        items += repository.groups.values()
        for item in items:
            try:
                await self._sync_one(item, first)
            except Exception:  # one table's trouble must not stop the others
                log.exception("versions of %s not followed this poll", item.name)
        gone = set(self._followed) - {item.name for item in items}
        for name in sorted(gone):
            if name in repository.problems:
                # Like a failed reload: what serves goes on, the problem is named.
                self._installed.version_failures[name] = {name: repository.problems[name]}
                continue
            self._unload(name)
        # Which versions this worker serves, for the other workers and the tests.
        await self._installed.publish()

    async def _sync_one(self, item: VersionedTable | Group, first: bool) -> None:
        followed = self._followed.setdefault(item.name, _Followed())
        identities = item.identities
        previous, followed.seen = followed.seen, identities
        changes = version_changes(previous, identities)
        if changes and not first:
            log.info(
                "%s: versions appeared %s, disappeared %s, changed %s (loaded once settled)",
                item.name,
                list(changes.appeared),
                list(changes.disappeared),
                list(changes.changed),
            )
        settled = {
            number
            for number, identity in identities.items()
            if first
            or previous.get(number) == identity
            or followed.loaded.get(number, ("",))[0] == identity
        }
        kept: dict[int, Any] = {n: v for n, v in item.versions.items() if n in settled}
        view: VersionedTable | Group = dataclasses.replace(item, versions=kept)  # type: ignore[arg-type]
        replaced: list[Built] = []
        reloaded: list[tuple[ServedTable, ServedTable | None]] = []  # (new, old) of a version
        while True:
            resolution = view.resolve(followed.held.reasons(identities), followed.labels)
            todo = [
                number
                for number in resolution.served
                if followed.loaded.get(number, ("",))[0] != identities[number]
            ]
            if not todo:
                break
            for number in todo:
                try:
                    built = await self._build(item, number)
                except Exception as exc:
                    reason = str(exc) if str(exc) else repr(exc)
                    log.error("%s version %d held back: %s", item.name, number, reason)
                    followed.held.note(number, identities[number], reason)
                    continue
                old = followed.loaded.get(number)
                followed.loaded[number] = (identities[number], built)
                if old is not None:
                    replaced.append(old[1])
                    reloaded += _pairs(built, old[1])
        await catch_up(reloaded)  # then the swap, with no await between
        self._install(item, resolution, followed)
        leaving = [n for n in followed.loaded if n not in resolution.served]
        if resolution.served:
            for number in leaving:
                replaced.append(followed.loaded.pop(number)[1])
        for built in replaced:
            self._retire(built)

    async def _build(self, item: VersionedTable | Group, number: int) -> Built:
        """Version ``number`` of ``item``, its gatherers started; a group version whole or
        not at all (a member failing releases those built)."""
        if isinstance(item, VersionedTable):
            table = await self._builder.build_version(item.versions[number].source, item.options)
            table.batcher.start()
            return table
        members: dict[str, ServedTable] = {}
        for stem, source in sorted(item.versions[number].members.items()):
            try:
                members[stem] = await self._builder.build_version(source, item.member_options[stem])
            except Exception as exc:
                for table in members.values():
                    table.backend.close()
                raise TableLoadError(f"member {source.name}: {exc}") from exc
        for table in members.values():
            table.batcher.start()
        return members

    def _install(
        self, item: VersionedTable | Group, resolution: Resolution, followed: _Followed
    ) -> None:
        """Serve what ``resolution`` serves in one step; name its failures."""
        installed = self._installed
        installed.version_failures[item.name] = dict(resolution.failures)
        names = (
            [item.name] if isinstance(item, VersionedTable) else [item.name, *item.table_names()]
        )
        if resolution.default is None:
            if item.name not in installed.version_sets and item.name not in installed.groups:
                for name in names:
                    installed.failures[name] = resolution.failures.get(item.name, "no version")
            return  # what serves goes on, named under failed
        followed.labels = resolution.labels
        labels = {label: str(number) for label, number in resolution.labels.items()}
        if isinstance(item, VersionedTable):
            tables: dict[str, Any] = {str(n): followed.loaded[n][1] for n in resolution.served}
            installed.install_versions(
                VersionSet(item.name, tables, labels, tables[str(resolution.default)])
            )
            return
        versions = {
            str(n): GroupVersion(item.name, str(n), _members(followed.loaded[n][1]))
            for n in resolution.served
        }
        installed.install_group(
            GroupSet(item.name, item.members, versions, labels, str(resolution.default))
        )

    def _unload(self, name: str) -> None:
        """``name`` left the repository: stop serving it (requests in flight finish)."""
        followed = self._followed.pop(name)
        self._installed.uninstall(name)
        for _, built in followed.loaded.values():
            self._retire(built)

    def _retire(self, built: Built) -> None:
        tables = [built] if isinstance(built, ServedTable) else list(built.values())
        for table in tables:
            self._installed.retire_later(table, self._drain_seconds)


def _members(built: Built) -> dict[str, ServedTable]:
    assert isinstance(built, dict), "a group version is its members"
    return built


def _pairs(new: Built, old: Built) -> list[tuple[ServedTable, ServedTable | None]]:
    """The tables of a version loaded again, each with the one it replaces."""
    if isinstance(new, ServedTable):
        return [(new, old if isinstance(old, ServedTable) else None)]
    previous = old if isinstance(old, dict) else {}
    return [(table, previous.get(stem)) for stem, table in new.items()]
