"""Compact tables: float16 and int8 (per-row scales) — bounded error, smaller files, served dequantised."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.repository.compact import convert_table, dequantize, quantize_int8, scales_path
from tests.support.server_process import ServerProcess


def test_int8_error_is_bounded_by_half_a_step() -> None:
    table = (
        np.random.default_rng(0).standard_normal((3000, 32)) * np.linspace(0.01, 10, 3000)[:, None]
    ).astype(np.float32)
    table[5] = 0.0
    codes, scales = quantize_int8(table, block_rows=700)
    back = dequantize(codes, scales)
    assert (
        np.abs(back - table) <= scales[:, None] / 2 + 1e-6 * np.abs(table).max(axis=1)[:, None]
    ).all()
    assert not back[5].any()
    assert codes.dtype == np.int8 and np.abs(codes).max() <= 127


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_convert_command_and_serving(tmp_path: Path, dtype: str) -> None:
    table = np.random.default_rng(1).standard_normal((4000, 64)).astype(np.float32)
    source = tmp_path / "source.npy"
    np.save(source, table)
    folder = tmp_path / "models"
    destination = folder / "small.npy"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "convert",
            str(source),
            str(destination),
            "--dtype",
            dtype,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "reconstruction error" in result.stdout
    size = destination.stat().st_size + (
        scales_path(destination).stat().st_size if dtype == "int8" else 0
    )
    ratio = size / source.stat().st_size
    assert ratio < (0.27 if dtype == "int8" else 0.51)  # int8: 1/4 + scales; float16: 1/2
    assert f'dtype = "{dtype}"' in destination.with_suffix(".toml").read_text()
    if dtype == "int8":
        codes, scales = np.load(destination), np.load(scales_path(destination))
        expected = dequantize(codes, scales)
        assert np.abs(expected - table).max() <= scales.max() / 2 + 1e-6
    else:
        expected = table.astype(np.float16).astype(np.float32)
    with ServerProcess(folder) as server:
        server.wait_ready()
        info = httpx.get(f"{server.url}/v1/tables/small").json()
        assert info["dtype"] == dtype and info["backend"] == "numpy"
        ids = [[0, 5, 3999], [17, 17, 2]]
        got = np.array(
            httpx.post(f"{server.url}/v1/tables/small/lookup", json={"ids": ids}).json()["vectors"],
            np.float32,
        )
        np.testing.assert_array_equal(got, expected[np.array(ids)])
        half = httpx.post(
            f"{server.url}/v1/tables/small/lookup",
            json={"ids": [1], "dtype": "float16"},
            headers={"Accept": "application/octet-stream"},
        )
        np.testing.assert_array_equal(
            np.frombuffer(half.content, "<f2"), expected[1].astype(np.float16)
        )
        near = httpx.post(
            f"{server.url}/v1/tables/small/neighbors", json={"ids": [3], "k": 3}
        ).json()
        assert len(near["ids"][0]) == 3 and 3 not in near["ids"][0]


def test_dtype_option_must_match_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    convert_table(np.ones((10, 4), np.float32), folder / "t.npy", "float16")
    (folder / "t.toml").write_text('dtype = "int8"\n')
    with ServerProcess(folder) as server:
        ready = server.wait_ready()
        assert ready["status"] == "degraded" and "holds float16" in ready["failed"]["t"]


def test_int8_without_scales_fails_clearly(tmp_path: Path) -> None:
    from service.errors import TableLoadError
    from service.repository.npy_loader import load_npy

    np.save(tmp_path / "codes.npy", np.zeros((4, 4), np.int8))
    with pytest.raises(TableLoadError, match="scales"):
        load_npy(tmp_path / "codes.npy")
