"""Update files: written whole or not at all, damage detected, temp names never listed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.updates.delta_files import (
    DELTA,
    SNAPSHOT,
    DamagedUpdateFile,
    UpdateFile,
    listed,
    read_file,
    read_update_ids,
    write_file,
)


def _content(sequence: int = 7, dtype: str = "float16") -> UpdateFile:
    rows = np.arange(6, dtype=dtype).reshape(3, 2)
    return UpdateFile(sequence, np.array([5, 0, 9], np.int64), rows, {"a": sequence}, 2)


def test_a_file_reads_back_as_written(tmp_path: Path) -> None:
    path = write_file(tmp_path, DELTA, _content())
    assert path.name == "000000000007.delta"
    back = read_file(path)
    assert back.sequence == 7 and back.since == 2 and back.update_ids == {"a": 7}
    assert back.ids.tolist() == [5, 0, 9]
    assert back.rows.dtype == np.float16 and back.rows.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert read_update_ids(path) == {"a": 7}


def test_listing_skips_temp_and_other_files(tmp_path: Path) -> None:
    write_file(tmp_path, DELTA, _content(2))
    write_file(tmp_path, SNAPSHOT, _content(1))
    (tmp_path / ".tmp-1-ab-000000000003.delta").write_bytes(b"half")
    (tmp_path / "lock").touch()
    assert listed(tmp_path) == [(1, SNAPSHOT), (2, DELTA)]
    assert listed(tmp_path / "missing") == []


@pytest.mark.parametrize("cut", [10, 60, -1])
def test_a_truncated_file_is_damaged(tmp_path: Path, cut: int) -> None:
    path = write_file(tmp_path, DELTA, _content())
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(DamagedUpdateFile):
        read_file(path)


def test_a_flipped_byte_is_damaged(tmp_path: Path) -> None:
    path = write_file(tmp_path, DELTA, _content(dtype="float32"))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedUpdateFile, match="checksum"):
        read_file(path)
