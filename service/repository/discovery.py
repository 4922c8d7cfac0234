"""Finds the tables of a model repository folder (API.md's layout)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from service.repository.compact import SCALES_SUFFIX

TABLE_SUFFIXES = (".npy", ".onnx")
# Names are identifiers, never paths: no separators, no leading dot.
TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class TableSource:
    """Where one table's file and (optional) options file lie."""

    name: str
    path: Path
    format: str  # "npy" | "onnx" | "redis" (path is then the .toml itself)
    options_path: Path | None
    vocab_path: Path | None = None


def discover_tables(folder: Path) -> tuple[dict[str, TableSource], dict[str, str]]:
    """Tables found in ``folder`` and, by name, the entries that cannot be tables (with why)."""
    sources: dict[str, TableSource] = {}
    problems: dict[str, str] = {}
    if not folder.is_dir():
        return sources, {str(folder): f"{folder}: model repository folder not found"}

    def add(name: str, source: TableSource | None, problem: str | None = None) -> None:
        if not TABLE_NAME.match(name):
            problems[name] = f"{source.path if source else name}: not a valid table name"
        elif problem is not None:
            problems[name] = problem
        elif name in sources or name in problems:
            problems[name] = f"{folder}: table {name!r} is defined more than once"
            sources.pop(name, None)
        elif source is not None:
            sources[name] = source

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(SCALES_SUFFIX):
            continue  # hidden files; the scales of int8 tables, which belong to their table
        if entry.is_file() and entry.suffix in TABLE_SUFFIXES:
            options = entry.with_suffix(".toml")
            vocab = entry.with_suffix(".vocab")
            add(
                entry.stem,
                TableSource(
                    entry.stem,
                    entry,
                    entry.suffix[1:],
                    options if options.is_file() else None,
                    vocab if vocab.is_file() else None,
                ),
            )
        elif entry.is_file() and entry.suffix == ".toml" and not _has_weights_beside(entry):
            # A lone options file declares a table whose rows live in Redis (docs/redis.md).
            vocab = entry.with_suffix(".vocab")
            add(
                entry.stem,
                TableSource(entry.stem, entry, "redis", entry, vocab if vocab.is_file() else None),
            )
        elif entry.is_dir():
            files = sorted(
                p
                for p in entry.iterdir()
                if p.is_file() and p.suffix in TABLE_SUFFIXES and not p.name.endswith(SCALES_SUFFIX)
            )
            if not files:
                continue  # a folder without a table file is not a table (e.g. notes, exports)
            if len(files) > 1:
                add(entry.name, None, f"{entry}: holds {len(files)} table files, expected one")
                continue
            options = entry / "table.toml"
            vocab = entry / "table.vocab"
            add(
                entry.name,
                TableSource(
                    entry.name,
                    files[0],
                    files[0].suffix[1:],
                    options if options.is_file() else None,
                    vocab if vocab.is_file() else None,
                ),
            )
    return sources, problems


def _has_weights_beside(options: Path) -> bool:
    return any(options.with_suffix(suffix).is_file() for suffix in TABLE_SUFFIXES)


def has_tables(folder: Path) -> bool:
    """True when ``folder`` holds at least one table file or table folder (even a broken one)."""
    if not folder.is_dir():
        return False
    sources, problems = discover_tables(folder)
    return bool(sources or problems)
