"""Finds the flat tables of a model repository folder (API.md's layout), and tells folders apart.

Versioned tables and groups (numbered version folders) are read by ``discover_repository``
(service/repository/layout.py); ``discover_tables`` returns the flat tables only, as it always
has, and names a folder mixing a table file with numbered version folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.repository.compact import SCALES_SUFFIX, scales_path

TABLE_SUFFIXES = (".npy", ".onnx")
# Names are identifiers, never paths: no separators, no leading dot.
TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# A folder named by digits inside a table folder is a version folder (Triton's layout); only
# ``[1-9][0-9]*`` names a version (up to 18 digits: an int64), "0" and "07" are named problems.
NUMBERED = re.compile(r"^[0-9]+$")
VERSION_NUMBER = re.compile(r"^[1-9][0-9]{0,17}$")
GROUP_FILE = "group.toml"
FolderKind = Literal["flat", "versioned", "group", "mixed"]


@dataclass(frozen=True)
class TableSource:
    """Where one table's file and (optional) options file lie."""

    name: str
    path: Path
    format: str  # "npy" | "onnx" | "redis" (path is then the .toml itself)
    options_path: Path | None
    vocab_path: Path | None = None
    # The version folder's number, for a version of a versioned table or group; None when flat.
    version: int | None = None


def outside_reason(path: Path, root: Path) -> str | None:
    """Why ``path`` may not be read (it resolves outside ``root``, a resolved folder), or None.

    Symlinks are followed: one that stays inside the repository (Kubernetes ConfigMap
    mounts: ``name -> ..data/name``, ``..data -> ..2024_01_01``) is fine.
    """
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return f"{path}: a broken symlink (its target does not exist)"
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        return f"{path}: cannot resolve the real path: {exc}"
    if not real.is_relative_to(root):
        return f"{path}: resolves to {real}, outside the model repository {root}; refused"
    return None


def _checked_source(source: TableSource, root: Path) -> str | None:
    """The first file of a table (weights, scales, options, vocabulary) resolving outside."""
    files = [source.path, source.options_path, source.vocab_path]
    if source.format == "npy" and scales_path(source.path).exists():
        files.append(scales_path(source.path))
    for file in files:
        if file is not None and (reason := outside_reason(file, root)) is not None:
            return reason
    return None


def _file_table(entry: Path) -> TableSource:
    options = entry.with_suffix(".toml")
    vocab = entry.with_suffix(".vocab")
    return TableSource(
        entry.stem,
        entry,
        entry.suffix[1:],
        options if options.is_file() or options.is_symlink() else None,
        vocab if vocab.is_file() or vocab.is_symlink() else None,
    )


# What mkfs leaves at the root of an ext4 volume (root only): never a table.
LOST_AND_FOUND = "lost+found"


def table_files(folder: Path) -> list[Path]:
    """The table files directly in ``folder`` (int8 scales and hidden files are not tables)."""
    return sorted(
        p
        for p in folder.iterdir()
        if (p.is_file() or p.is_symlink())
        and p.suffix in TABLE_SUFFIXES
        and not p.name.endswith(SCALES_SUFFIX)
        and not p.name.startswith(".")
    )


def numbered_folders(folder: Path) -> list[Path]:
    """The folders in ``folder`` named by digits (version folders, or problems if not canonical)."""
    return sorted(
        p for p in folder.iterdir() if NUMBERED.match(p.name) and (p.is_dir() or p.is_symlink())
    )


def folder_kind(folder: Path) -> FolderKind | None:
    """What a folder of the repository is; None: no table (notes, exports, an empty folder).

    ``group.toml`` makes a group; numbered folders a versioned table; a table file directly in
    it a flat table; a table file AND numbered folders (or ``group.toml``) is ``mixed``, a
    problem: which one the operator meant cannot be told.
    """
    files = table_files(folder)
    if (folder / GROUP_FILE).is_file() or (folder / GROUP_FILE).is_symlink():
        return "mixed" if files else "group"
    if numbered_folders(folder):
        return "mixed" if files else "versioned"
    return "flat" if files else None


def mixed_folder_reason(folder: Path) -> str:
    """The problem of a folder that ``folder_kind`` calls ``mixed``."""
    return (
        f"{folder}: holds a table file directly and numbered version folders (or a "
        f"{GROUP_FILE}); a table folder holds one or the other: move the file into a "
        "version folder <N>/, or the numbered folders out"
    )


def _folder_table(entry: Path) -> TableSource | str | None:
    """The table of a flat table folder, a problem (str), or None when it is no flat table."""
    kind = folder_kind(entry)
    if kind == "mixed":
        return mixed_folder_reason(entry)
    if kind != "flat":
        return None  # a folder without a table file is not a flat table (e.g. notes, exports)
    files = table_files(entry)
    if len(files) > 1:
        return f"{entry}: holds {len(files)} table files, expected one"
    options = entry / "table.toml"
    vocab = entry / "table.vocab"
    return TableSource(
        entry.name,
        files[0],
        files[0].suffix[1:],
        options if options.is_file() or options.is_symlink() else None,
        vocab if vocab.is_file() or vocab.is_symlink() else None,
    )


def discover_tables(folder: Path) -> tuple[dict[str, TableSource], dict[str, str]]:
    """Tables found in ``folder`` and, by name, the entries that cannot be tables (with why).

    The repository is a boundary: every file and folder of a table must resolve, after
    symlinks, inside ``folder``; one that does not makes that table fail, named.
    """
    sources: dict[str, TableSource] = {}
    problems: dict[str, str] = {}
    if not folder.is_dir():
        return sources, {str(folder): f"{folder}: model repository folder not found"}
    root = folder.resolve()

    def add(name: str, source: TableSource | None, problem: str | None = None) -> None:
        if not TABLE_NAME.match(name):
            problems[name] = f"{source.path if source else name}: not a valid table name"
        elif name in sources or name in problems:
            problems[name] = f"{folder}: table {name!r} is defined more than once"
            sources.pop(name, None)
        elif problem is not None:
            problems[name] = problem
        elif source is not None:
            sources[name] = source

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(SCALES_SUFFIX):
            continue  # hidden files (..data of ConfigMaps); int8 scales belong to their table
        name = entry.name
        if entry.suffix in TABLE_SUFFIXES and not entry.is_dir():  # broken symlinks included
            name = entry.stem
            source: TableSource | str | None = _file_table(entry)
        elif entry.suffix == ".toml" and entry.is_file() and not _has_weights_beside(entry):
            # A lone options file declares a table whose rows live in Redis (docs/redis.md).
            name = entry.stem
            vocab = entry.with_suffix(".vocab")
            source = TableSource(name, entry, "redis", entry, vocab if vocab.is_file() else None)
        elif entry.is_dir():
            if name == LOST_AND_FOUND:
                continue
            # The folder itself first: iterating one outside the repository reads outside.
            reason = outside_reason(entry, root)
            if reason is not None:
                add(name, None, reason)
                continue
            try:
                source = _folder_table(entry)
            except PermissionError as exc:
                add(name, None, f"{entry}: cannot be read ({exc.strerror}); fix its permissions")
                continue
        else:
            continue
        if source is None:
            continue
        if isinstance(source, str):
            add(name, None, source)
            continue
        add(name, source, _checked_source(source, root))
    return sources, problems


def _has_weights_beside(options: Path) -> bool:
    return any(options.with_suffix(suffix).is_file() for suffix in TABLE_SUFFIXES)


def has_tables(folder: Path) -> bool:
    """True when ``folder`` holds at least one table, versioned table or group (even a broken one)."""
    if not folder.is_dir():
        return False
    sources, problems = discover_tables(folder)
    if sources or problems:
        return True
    root = folder.resolve()
    return any(
        entry.is_dir()
        and not entry.name.startswith(".")
        and entry.name != LOST_AND_FOUND
        and outside_reason(entry, root) is None  # an outside folder is a problem above already
        and folder_kind(entry) is not None
        for entry in folder.iterdir()
    )
