"""A group: tables trained together, served only at one version for all (``DIR/<group>/``).

``DIR/<group>/group.toml`` (the policy), ``DIR/<group>/<N>/<stem>.npy|.onnx`` (member ``stem``
of version N, the table ``<group>.<stem>``), ``DIR/<group>/<stem>.toml`` (its options).

The members: the member set of the NEWEST version folder holding every member of the older
ones; a version folder holding another set (missing a member, or one more) is held back,
named. So a version arriving member by member is not served until whole, and files of a new
member landing first hold back only that version. Adding a member: a new version with it
(older versions without it then leave service). Dropping one: remove it from the older
version folders too (or remove those folders); until then the new version is held back,
named. The members of a group never differ between its served versions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.errors import TableLoadError
from service.repository import version_folders as folders
from service.repository.discovery import GROUP_FILE, TableSource, outside_reason, table_files
from service.repository.options import TableOptions, read_table_options
from service.repository.version_policy import read_version_policy

# No dots in a group's name or a member's stem: ``<group>.<stem>`` is read one way only.
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class GroupVersion:
    """One whole version folder ``DIR/<group>/<N>/``: every member's table file."""

    number: int
    members: Mapping[str, TableSource]  # stem -> source (name "<group>.<stem>", version N)
    identity: str  # changes when any file of the folder or any member's options change


@dataclass(frozen=True, kw_only=True)
class Group(folders.Versioned):
    """A group of tables that flip together; ``resolve()`` says which versions are served."""

    members: tuple[str, ...]  # stems, sorted
    member_options: Mapping[str, TableOptions]  # stem -> options (every version's)
    versions: Mapping[int, GroupVersion]  # whole version folders

    @property
    def identities(self) -> dict[int, str]:
        return {number: version.identity for number, version in self.versions.items()}

    def table_names(self) -> list[str]:
        """The members as tables: ``<group>.<stem>``."""
        return [f"{self.name}.{stem}" for stem in self.members]


def read_group(folder: Path, root: Path) -> Group | str:
    """The group of ``folder`` (inside ``root``), or why it cannot be one at all."""
    name = folder.name
    if not GROUP_NAME.match(name):
        return f"{folder}: not a valid group name ({GROUP_NAME.pattern}: no dots)"
    policy_path = folder / GROUP_FILE
    if (reason := outside_reason(policy_path, root)) is not None:
        return reason
    try:
        policy = read_version_policy(policy_path)
    except TableLoadError as exc:
        return str(exc)
    readable, fields = folders.version_folders(folder, root, policy)
    broken = fields["broken"]
    listed = folders.without_broken(
        {n: _member_files(p, root) for n, p in readable.items()}, broken
    )
    newest_whole, members = member_set({n: set(files) for n, (_, files) in listed.items()})
    options = _member_options(folder, root, name, members, listed, fields["problems"])
    if isinstance(options, str):
        return options
    made = {
        number: _incomplete(readable[number], set(files), members, newest_whole)
        if not files or set(files) != members
        else _group_version(name, number, readable[number], root, entries, files, options)
        for number, (entries, files) in listed.items()
    }
    versions = folders.without_broken(made, broken)
    return Group(
        **fields, members=tuple(sorted(members)), member_options=options, versions=versions
    )


def member_set(stems: Mapping[int, set[str]]) -> tuple[int | None, set[str]]:
    """The newest version whose members include every older version's, and its members."""
    older: set[str] = set()
    newest: int | None = None
    for number in sorted(stems):
        if stems[number] and stems[number] >= older:
            newest = number
        older |= stems[number]
    return newest, (set(stems[newest]) if newest is not None else set())


def _member_files(folder: Path, root: Path) -> tuple[list[Path], dict[str, Path]] | str:
    """A version folder's entries and its member files by stem, or why it cannot serve."""
    try:
        entries = folders.version_entries(folder, root)
        if isinstance(entries, str):
            return entries
        files: dict[str, Path] = {}
        for path in table_files(folder):
            stem = path.name[: -len(path.suffix)]
            if not GROUP_NAME.match(stem):
                return f"{path}: not a valid member name ({GROUP_NAME.pattern}: no dots)"
            if stem in files:
                return f"{folder}: member {stem} is both {files[stem].name} and {path.name}"
            files[stem] = path
    except OSError as exc:  # changed while read (a copy in progress): seen again next poll
        return f"{folder}: cannot be read: {exc}"
    return entries, files


def _member_options(
    folder: Path,
    root: Path,
    name: str,
    members: set[str],
    listed: Mapping[int, tuple[list[Path], dict[str, Path]]],
    problems: dict[str, str],
) -> dict[str, TableOptions] | str:
    """Each member's options (defaults without a file); a bad file fails the whole group.

    An options file for a stem no version folder holds is named (``"<group>.<stem>"``) and
    stops nothing: it may be the options of a member still being copied in.
    """
    held = {stem for _, files in listed.values() for stem in files}
    for path in sorted(folder.glob("*.toml")):
        stem = path.name[: -len(".toml")]
        if path.name != GROUP_FILE and not path.name.startswith(".") and stem not in held:
            problems[f"{name}.{stem}"] = (
                f"{path}: options for {stem}, which no version folder holds"
            )
    options: dict[str, TableOptions] = {}
    for stem in sorted(members):
        options_path = folders.existing(folder / f"{stem}.toml")
        try:
            if options_path is not None and (reason := outside_reason(options_path, root)):
                return reason
            options[stem] = read_table_options(options_path)
        except TableLoadError as exc:
            return str(exc)
    return options


def _incomplete(folder: Path, stems: set[str], members: set[str], newest: int | None) -> str:
    """Why a version folder holding ``stems`` is not whole (the members are ``newest``'s)."""
    missing, extra = sorted(members - stems), sorted(stems - members)
    parts = []
    if missing:
        parts.append(
            f"lacks member {', '.join(missing)}, which version {newest} has (to drop a member, "
            "remove it from the older version folders too)"
        )
    if extra:
        parts.append(
            f"has {', '.join(extra)}, no member of the group (its members are those of version "
            f"{newest}, the newest holding every older member: {', '.join(sorted(members))})"
        )
    return f"{folder}: " + "; ".join(parts or ["holds no member file (.npy or .onnx)"])


def _group_version(
    name: str,
    number: int,
    folder: Path,
    root: Path,
    entries: list[Path],
    files: Mapping[str, Path],
    options: Mapping[str, TableOptions],
) -> GroupVersion | str:
    """The whole version ``number`` in ``folder``: each member's source, and its identity."""
    members: dict[str, TableSource] = {}
    used: list[Path] = []
    try:
        for stem, path in sorted(files.items()):
            vocab = folders.existing(folder / f"{stem}.vocab") or folders.existing(
                folder.parent / f"{stem}.vocab"
            )
            if vocab is not None and vocab.parent != folder:
                if (reason := outside_reason(vocab, root)) is not None:
                    return reason
                used.append(vocab)
            options_path = folders.existing(folder.parent / f"{stem}.toml")
            members[stem] = TableSource(
                f"{name}.{stem}", path, path.suffix[1:], options_path, vocab, version=number
            )
        identity = folders.version_identity(
            [*entries, *used], [options[s] for s in sorted(options)]
        )
    except OSError as exc:
        return f"{folder}: cannot be read: {exc}"
    return GroupVersion(number, members, identity)
