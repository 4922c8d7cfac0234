"""The hostile repository, loaded without a server: every bad table fails alone, named."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.errors import TableLoadError, TableUnavailable
from service.repository.discovery import discover_tables, outside_reason
from service.repository.options import read_table_options
from service.repository.weights import check_finite
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from tests.support.hostile_repository import write_hostile_repository


def test_every_bad_table_fails_with_its_reason_and_the_good_ones_load(tmp_path: Path) -> None:
    repo = write_hostile_repository(tmp_path)
    registry = TableRegistry(ServiceSettings(models=repo.models))
    asyncio.run(registry.load())
    try:
        assert registry.names() == sorted(repo.good)
        assert set(registry.failures) == set(repo.failed)
        for name, phrase in repo.failed.items():
            assert phrase in registry.failures[name], (name, registry.failures[name])
        for name, rows in repo.good.items():
            np.testing.assert_array_equal(registry.get(name).weights.take(np.arange(5)), rows[:5])
        with pytest.raises(TableUnavailable) as unavailable:
            registry.get("nan")
        assert unavailable.value.status == 503 and "row 7" in unavailable.value.detail["reason"]
        assert registry.get("cm").vocabulary is not None  # read through ..data symlinks
    finally:
        asyncio.run(registry.close())


def test_outside_files_are_refused_before_anything_reads_them(tmp_path: Path) -> None:
    repo = write_hostile_repository(tmp_path)
    sources, problems = discover_tables(repo.models)
    assert "out_vocab" in problems and "out_vocab" not in sources
    assert "secret.txt" in problems["out_vocab"]  # the target is named in the reason
    root = repo.models.resolve()
    assert outside_reason(repo.models / "cm.vocab", root) is None
    assert outside_reason(repo.models / "out_file.npy", root) is not None


def test_symlink_loop_is_a_named_problem(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "loop.npy").symlink_to("loop.npy")
    _, problems = discover_tables(models)
    assert "loop" in problems


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("padding_idx = true", "padding_idx: Input should be a valid integer"),
        ('max_norm = "0.5"', "max_norm: Input should be a valid number"),
        ("mask_zero = 1", "mask_zero: Input should be a valid boolean"),
        ('max_batch_ids = "8"', "max_batch_ids"),
        ("batching = 0", "batching"),
        ("device = 0", "device"),
        ("padding_ix = 0", "did you mean 'padding_idx'"),
        ("completely_unknown = 0", "completely_unknown: unknown option"),
    ],
)
def test_options_are_strict(tmp_path: Path, text: str, phrase: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text + "\n")
    with pytest.raises(TableLoadError) as error:
        read_table_options(path)
    assert phrase in str(error.value) and str(path) in str(error.value)


def test_integers_are_still_floats_in_options(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("max_norm = 2\nnorm_type = 1\n")
    options = read_table_options(path)
    assert options.max_norm == 2.0 and options.norm_type == 1.0


def test_check_finite_names_the_first_bad_row_across_chunks(monkeypatch) -> None:
    monkeypatch.setattr("service.repository.weights.FINITE_CHUNK_BYTES", 64)
    table = np.ones((100, 4), np.float32)
    check_finite(table, Path("t.npy"))
    table[61, 2] = np.inf
    table[90, 0] = np.nan
    with pytest.raises(TableLoadError, match=r"inf first at row 61, column 2"):
        check_finite(table, Path("t.npy"))


def test_check_finite_float16_by_bits() -> None:
    table = np.full((10, 4), 65504, np.float16)  # the largest finite float16
    table[1] = -65504
    check_finite(table, Path("t.npy"))
    for bad in (np.nan, np.inf, -np.inf):
        table[5, 1] = bad
        with pytest.raises(TableLoadError, match="row 5, column 1"):
            check_finite(table, Path("t.npy"))


def _unreadable(real: Callable[[Path], object]) -> Callable[[Path], object]:
    """``real``, except that the folders ``locked`` and ``lost+found`` cannot be read."""

    def read(folder: Path) -> object:
        if folder.name in ("locked", "lost+found"):
            raise PermissionError(13, "Permission denied")
        return real(folder)

    return read


def test_lost_and_found_is_no_table_and_an_unreadable_folder_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ext4 volume's root-only lost+found is skipped (uid 10001 cannot list it); any other
    folder that cannot be read is a failed table named with the reason, never a crash."""
    from service.repository import discovery, layout

    np.save(tmp_path / "good.npy", np.zeros((2, 2), np.float32))
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "locked").mkdir()
    np.save(tmp_path / "locked" / "t.npy", np.zeros((2, 2), np.float32))
    monkeypatch.setattr(discovery, "_folder_table", _unreadable(discovery._folder_table))
    sources, problems = discover_tables(tmp_path)
    assert set(sources) == {"good"}
    assert set(problems) == {"locked"} and "cannot be read" in problems["locked"]
    monkeypatch.setattr(layout, "folder_kind", _unreadable(discovery.folder_kind))
    repository = layout.discover_repository(tmp_path)  # what the registry reads at start
    assert set(repository.flat) == {"good"} and set(repository.problems) == {"locked"}
