"""Warm-up reads every page of a mapped table and changes nothing in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.repository.npy_loader import load_npy


def test_warm_up_touches_the_whole_mapping_and_leaves_rows_exact(tmp_path: Path) -> None:
    table = np.random.default_rng(0).standard_normal((3000, 33)).astype(np.float32)
    np.save(tmp_path / "t.npy", table)
    weights = load_npy(tmp_path / "t.npy")
    assert isinstance(weights.array, np.memmap)
    assert weights.warm_up() == table.nbytes
    assert np.array_equal(weights.take(np.arange(3000)), table)


def test_warm_up_of_an_int8_table_reads_codes_and_scales(tmp_path: Path) -> None:
    codes = np.arange(-50, 50, dtype=np.int8).reshape(25, 4)
    scales = np.linspace(0.1, 1.0, 25, dtype=np.float32)
    np.save(tmp_path / "t.npy", codes)
    np.save(tmp_path / "t.scales.npy", scales)
    weights = load_npy(tmp_path / "t.npy")
    assert weights.warm_up() == codes.nbytes + scales.nbytes
