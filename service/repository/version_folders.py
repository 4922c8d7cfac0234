"""What versioned tables and groups share: numbered version folders, a policy, identities."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, TypeVar

from service.repository.discovery import VERSION_NUMBER, numbered_folders, outside_reason
from service.repository.options import TableOptions
from service.repository.version_policy import VersionPolicy
from service.repository.versions import Resolution, resolve
from service.repository.weights import file_version

Made = TypeVar("Made")


@dataclass(frozen=True, kw_only=True)
class Versioned:
    """A versioned table or a group: a version policy over numbered version folders."""

    name: str
    folder: Path
    policy: VersionPolicy
    # Version folders that cannot be served as they are, with why (outside, no table file,
    # a group version lacking a member): held back like a version that failed to load.
    broken: Mapping[int, str]
    # Named problems that stop nothing: "<name>/07" (no version number), "<group>.<stem>"
    # (options for no member). They go to ``Resolution.failures``.
    problems: Mapping[str, str]

    @property
    def identities(self) -> dict[int, str]:
        """Version number -> identity, for every version folder that can be loaded."""
        raise NotImplementedError

    @property
    def present(self) -> list[int]:
        """Every version folder, loadable or broken, ascending."""
        return sorted({*self.identities, *self.broken})

    def resolve(
        self,
        failed: Mapping[int, str] | None = None,
        previous_labels: Mapping[str, int] | None = None,
    ) -> Resolution:
        """``versions.resolve`` over these folders: ``failed`` adds load failures to ``broken``."""
        held = {**self.broken, **(failed or {})}
        resolution = resolve(self.name, self.policy, self.present, held, previous_labels)
        return dataclasses.replace(resolution, failures={**self.problems, **resolution.failures})


class VersionedFields(TypedDict):
    """The fields of every ``Versioned``: ``VersionedTable(**fields, ...)``."""

    name: str
    folder: Path
    policy: VersionPolicy
    broken: dict[int, str]
    problems: dict[str, str]


def version_folders(
    folder: Path, root: Path, policy: VersionPolicy
) -> tuple[dict[int, Path], VersionedFields]:
    """The readable numbered folders of ``folder`` by number, and the ``Versioned`` fields.

    A digit-named folder that is no version number (``0``, ``07``) is a problem named
    ``"<name>/<folder>"``; one resolving outside ``root`` is broken, never listed.
    """
    name = folder.name
    readable: dict[int, Path] = {}
    broken: dict[int, str] = {}
    problems: dict[str, str] = {}
    for entry in numbered_folders(folder):
        if not VERSION_NUMBER.match(entry.name):
            problems[f"{name}/{entry.name}"] = (
                f"{entry}: not a version folder: versions are numbered 1, 2, 3... "
                "(no 0, no leading zero, at most 18 digits)"
            )
            continue
        number = int(entry.name)
        reason = outside_reason(entry, root)
        if reason is not None:
            broken[number] = reason
        elif not entry.is_dir():
            broken[number] = f"{entry}: not a folder"
        else:
            readable[number] = entry
    fields = VersionedFields(
        name=name, folder=folder, policy=policy, broken=broken, problems=problems
    )
    return readable, fields


def without_broken(made: Mapping[int, Made | str], broken: dict[int, str]) -> dict[int, Made]:
    """``made`` by version number, each one that is a reason (str) moved to ``broken``."""
    kept: dict[int, Made] = {}
    for number, value in made.items():
        if isinstance(value, str):
            broken[number] = value
        else:
            kept[number] = value
    return kept


def version_entries(version: Path, root: Path) -> list[Path] | str:
    """The entries of a version folder (hidden ones skipped), or why one may not be read.

    Every entry must resolve inside the repository, used by the table or not: a version folder
    is one unit, and its identity stats every entry. An options file in it is refused.
    """
    entries = sorted(p for p in version.iterdir() if not p.name.startswith("."))
    for entry in entries:
        reason = outside_reason(entry, root)
        if reason is not None:
            return reason
        if entry.suffix == ".toml":  # never read: refused rather than silently ignored
            return (
                f"{entry}: a version folder holds no options; they go in the folder above "
                "(table.toml, or <member>.toml in a group) and apply to every version"
            )
    return entries


def existing(path: Path) -> Path | None:
    """``path`` when a file (or a symlink, checked later) lies there, else None."""
    return path if path.is_file() or path.is_symlink() else None


def version_identity(files: Iterable[Path], options: Iterable[TableOptions]) -> str:
    """Changes when a file's size or mtime changes, or an option's value (not its file's)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(file_version(*files).encode())
    for option in options:
        digest.update(option.model_dump_json().encode())
    return digest.hexdigest()
