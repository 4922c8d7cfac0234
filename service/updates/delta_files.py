"""The immutable files of a file table's update log, written whole or not at all.

A file holds, after a fixed header, a JSON index of update ids, the ``n`` int64 ids and the
``(n, dim)`` rows in the table's stored dtype (little-endian):

    magic "EMBUPD1\\0" | sequence u64 | n u64 | dim u64 | dtype 8 ascii | index bytes u64 | crc32 u32
    index (JSON {"update_ids": {update_id: sequence}, "since": int}) | ids | rows

``sequence`` is the highest update the file holds. A *delta* (``<sequence>.delta``) is one
update; a *snapshot* (``<sequence>.snapshot``) folds every update up to its sequence (one row
per id, the newest) and remembers the last update ids. Files are written to a hidden temp name,
fsynced, renamed in and the folder fsynced: a crash leaves each file whole or absent, and
readers never list temp names. The crc32 of everything after the header catches a file
damaged on disk; such a file is an error, never half applied.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC = b"EMBUPD1\x00"
_HEADER = struct.Struct("<8sQQQ8sQI")
DELTA = "delta"
SNAPSHOT = "snapshot"
_NAME = re.compile(r"^([0-9]{12})\.(delta|snapshot)$")
TEMP_PREFIX = ".tmp-"


class DamagedUpdateFile(RuntimeError):
    """An update file that is not whole (bad magic, length or checksum): never applied."""


@dataclass(frozen=True)
class UpdateFile:
    """The contents of one update file."""

    sequence: int
    ids: np.ndarray  # (n,) int64
    rows: np.ndarray  # (n, dim), stored dtype
    update_ids: dict[str, int]  # update_id -> sequence it was applied as
    # Rows of updates up to ``since`` are not in the file (a delta: its sequence - 1; a
    # snapshot: 0, or the sequence folded into the table's base file before it was written).
    since: int


def file_name(sequence: int, kind: str) -> str:
    """``000000000042.delta``: sorting names sorts sequences."""
    return f"{sequence:012d}.{kind}"


def listed(folder: Path) -> list[tuple[int, str]]:
    """``(sequence, kind)`` of the whole files in ``folder``, by sequence (temp names skipped)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), match.group(2)))
    return sorted(found)


def write_file(folder: Path, kind: str, content: UpdateFile) -> Path:
    """Write ``content`` as ``folder/<sequence>.<kind>`` durably: temp, fsync, rename, fsync dir."""
    rows = np.ascontiguousarray(content.rows)
    dtype = rows.dtype.newbyteorder("<")
    index = json.dumps({"update_ids": content.update_ids, "since": content.since}).encode()
    ids = np.ascontiguousarray(content.ids, dtype="<i8")
    payload = [index, ids.tobytes(), rows.astype(dtype, copy=False).tobytes()]
    crc = 0
    for part in payload:
        crc = zlib.crc32(part, crc)
    header = _HEADER.pack(
        MAGIC,
        content.sequence,
        ids.size,
        rows.shape[1],
        dtype.name.encode().ljust(8, b"\0"),
        len(index),
        crc,
    )
    return durable_write(folder / file_name(content.sequence, kind), [header, *payload])


def durable_write(target: Path, parts: list[bytes]) -> Path:
    """Write ``parts`` to ``target`` so that a crash leaves it whole or absent."""
    temp = target.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{target.name}")
    try:
        with temp.open("wb") as handle:
            for part in parts:
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(target.parent)
    return target


def durable_folder(folder: Path) -> None:
    """Create ``folder`` (and missing parents) so that a power loss cannot drop it."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
        fsync_folder(made.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename (or a new entry) in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_file(path: Path) -> UpdateFile:
    """The update file at ``path``; ``DamagedUpdateFile`` if it is not whole."""
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise DamagedUpdateFile(f"{path}: shorter than its header")
    magic, sequence, n, dim, dtype_name, index_bytes, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DamagedUpdateFile(f"{path}: not an update file")
    try:
        dtype = np.dtype(dtype_name.rstrip(b"\0").decode()).newbyteorder("<")
    except TypeError as exc:
        raise DamagedUpdateFile(f"{path}: unknown dtype {dtype_name!r}") from exc
    body = memoryview(data)[_HEADER.size :]
    if len(body) != index_bytes + n * 8 + n * dim * dtype.itemsize or zlib.crc32(body) != crc:
        raise DamagedUpdateFile(f"{path}: length or checksum does not match (damaged)")
    index = json.loads(bytes(body[:index_bytes]))
    ids = np.frombuffer(body, "<i8", n, index_bytes)
    rows = np.frombuffer(body, dtype, n * dim, index_bytes + n * 8).reshape(n, dim)
    update_ids = {str(k): int(v) for k, v in index["update_ids"].items()}
    return UpdateFile(int(sequence), ids, rows, update_ids, int(index["since"]))


def _header(handle: BinaryIO, path: Path) -> tuple[Any, ...]:
    """The header fields of the open update file ``handle`` (read from its start)."""
    header = handle.read(_HEADER.size)
    if len(header) < _HEADER.size or header[: len(MAGIC)] != MAGIC:
        raise DamagedUpdateFile(f"{path}: not an update file")
    return _HEADER.unpack(header)


def row_count(path: Path) -> int:
    """How many rows the file at ``path`` holds (its header only)."""
    with path.open("rb") as handle:
        return int(_header(handle, path)[2])


def read_update_ids(path: Path) -> dict[str, int]:
    """Only the update-id index of the file at ``path`` (its header and index, not its rows)."""
    with path.open("rb") as handle:
        index = json.loads(handle.read(_header(handle, path)[5]))
    return {str(k): int(v) for k, v in index["update_ids"].items()}
