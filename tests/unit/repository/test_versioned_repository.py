"""Reading a repository with versioned tables: folders, policy, boundary, identities."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.repository.compact import quantize_int8
from service.repository.discovery import discover_tables, has_tables
from service.repository.layout import discover_repository
from service.repository.versioned_tables import VersionedTable
from service.repository.versions import HeldBack, version_changes
from tests.support.tables import random_table, write_npy


def version(models: Path, name: str, number: int | str, stem: str = "table") -> Path:
    return write_npy(models / name / str(number), stem, random_table(10, 4, int(number) + 1))


@pytest.fixture
def models(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    write_npy(models, "flat", random_table(10, 4))
    write_npy(models / "flatdir", "weights", random_table(10, 4))
    (models / "redis.toml").write_text('redis = "redis://localhost:6379"\n')
    for number in (1, 2, 3):
        version(models, "emb", number)
    (models / "emb" / "table.toml").write_text(
        "padding_idx = 0\nversions = {latest = 2}\n[labels]\nstable = 2\n"
    )
    (models / "emb" / "README.md").write_text("notes are not versions\n")
    (models / "emb" / "exports").mkdir()  # nor are folders named otherwise
    return models


def test_flat_tables_are_what_discover_tables_gives(models: Path) -> None:
    repository = discover_repository(models)
    assert repository.flat == discover_tables(models)[0]
    assert set(repository.flat) == {"flat", "flatdir", "redis"}
    assert repository.problems == {}
    assert repository.table_names() == ["emb", "flat", "flatdir", "redis"]


def test_a_versioned_table_and_what_it_serves(models: Path) -> None:
    emb = discover_repository(models).tables["emb"]
    assert sorted(emb.versions) == [1, 2, 3] and emb.broken == {} and emb.problems == {}
    assert emb.options.padding_idx == 0 and emb.options_path == models / "emb" / "table.toml"
    source = emb.versions[2].source
    assert (source.name, source.path, source.format, source.version) == (
        "emb",
        models / "emb" / "2" / "table.npy",
        "npy",
        2,
    )
    assert source.options_path == emb.options_path and source.vocab_path is None
    resolution = emb.resolve()
    assert resolution.served == (2, 3) and resolution.labels == {"stable": 2}
    assert resolution.default == 3 and resolution.failures == {}
    assert emb.resolve(failed={3: "broken"}).served == (1, 2)


def test_version_folder_vocabulary_then_the_shared_one(models: Path) -> None:
    (models / "emb" / "table.vocab").write_text("shared\n")
    (models / "emb" / "3" / "table.vocab").write_text("own\n")
    emb = discover_repository(models).tables["emb"]
    assert emb.versions[3].source.vocab_path == models / "emb" / "3" / "table.vocab"
    assert emb.versions[2].source.vocab_path == models / "emb" / "table.vocab"


def test_int8_scales_and_onnx_external_data_belong_to_their_version(models: Path) -> None:
    codes, scales = quantize_int8(random_table(10, 4))
    folder = models / "emb" / "4"
    folder.mkdir()
    np.save(folder / "t.npy", codes)
    np.save(folder / "t.scales.npy", scales)
    (folder / "t.onnx.data").write_bytes(b"external data")  # not a table file
    emb = discover_repository(models).tables["emb"]
    assert emb.versions[4].source.path == folder / "t.npy" and 4 not in emb.broken


def test_identities_follow_files_and_options_not_labels(models: Path) -> None:
    before = discover_repository(models).tables["emb"].identities
    toml = models / "emb" / "table.toml"
    toml.write_text("padding_idx = 0\nversions = {all = true}\n[labels]\nstable = 3\n")
    assert discover_repository(models).tables["emb"].identities == before  # policy only
    np.save(models / "emb" / "3" / "table.npy", random_table(11, 4))
    (models / "emb" / "5").mkdir()
    np.save(models / "emb" / "5" / "x.npy", random_table(10, 4))
    changed = discover_repository(models).tables["emb"].identities
    assert version_changes(before, changed).changed == (3,)
    assert version_changes(before, changed).appeared == (5,)
    toml.write_text("padding_idx = 1\n")  # an option: every version reloads
    again = discover_repository(models).tables["emb"].identities
    assert version_changes(changed, again).changed == (1, 2, 3, 5)
    (models / "emb" / "2" / "table.vocab").write_text("a\n")  # a new file of version 2
    assert version_changes(again, discover_repository(models).tables["emb"].identities).changed == (
        2,
    )


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ([], "holds no table file"),
        (["a.npy", "b.onnx"], "holds 2 table files"),
        (["a.npy", "table.toml"], "a version folder holds no options"),
    ],
)
def test_a_bad_version_folder_is_held_back_not_the_table(
    models: Path, files: list[str], reason: str
) -> None:
    folder = models / "emb" / "9"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"x")
    emb = discover_repository(models).tables["emb"]
    assert reason in emb.broken[9]
    resolution = emb.resolve()
    assert resolution.served == (2, 3) and reason in resolution.failures["emb/9"]


def test_hidden_folders_and_files_are_skipped(models: Path) -> None:
    (models / "emb" / ".9.tmp").mkdir()  # a version being copied, renamed to 9 when whole
    np.save(models / "emb" / ".9.tmp" / "t.npy", random_table(10, 4))
    (models / "emb" / "3" / ".t.npy.converting").write_bytes(b"half")
    emb = discover_repository(models).tables["emb"]
    assert sorted(emb.versions) == [1, 2, 3] and emb.broken == {}


@pytest.mark.parametrize("folder", ["0", "07", "1" * 19])
def test_digit_folders_that_are_no_version_are_named(models: Path, folder: str) -> None:
    (models / "emb" / folder).mkdir()
    emb = discover_repository(models).tables["emb"]
    assert "not a version folder" in emb.problems[f"emb/{folder}"]
    resolution = emb.resolve()
    assert resolution.served == (2, 3) and f"emb/{folder}" in resolution.failures


def test_bad_table_toml_fails_the_table_named(models: Path) -> None:
    (models / "emb" / "table.toml").write_text("versions = {latest = '2'}\n")
    repository = discover_repository(models)
    assert "emb" not in repository.tables
    assert "versions.latest" in repository.problems["emb"]
    assert str(models / "emb" / "table.toml") in repository.problems["emb"]


def test_a_folder_mixing_a_table_file_and_version_folders_is_a_problem(models: Path) -> None:
    write_npy(models / "emb", "direct", random_table(10, 4))
    for problems in (discover_tables(models)[1], discover_repository(models).problems):
        assert "holds a table file directly and numbered version folders" in problems["emb"]
    assert "emb" not in discover_repository(models).tables


def test_a_name_defined_twice_is_named_for_both(models: Path) -> None:
    (models / "emb.toml").write_text('redis = "redis://localhost:6379"\n')  # a Redis "emb"
    repository = discover_repository(models)
    assert "emb" not in repository.tables and "emb" not in repository.flat
    assert "defined more than once" in repository.problems["emb"]


def test_symlinks_out_of_the_repository_are_refused(models: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_npy(outside / "v", "table", random_table(10, 4))
    (outside / "secret.vocab").write_text("secret\n")
    os.symlink(outside / "v", models / "emb" / "7")  # a whole version folder
    (models / "emb" / "3" / "table.vocab").symlink_to(outside / "secret.vocab")
    (models / "emb" / "2" / "notes.txt").symlink_to(outside / "secret.vocab")  # even unused
    (models / "emb" / "8").symlink_to("../../outside/v")  # relative escapes too
    emb = discover_repository(models).tables["emb"]
    for number in (2, 3, 7, 8):
        assert "outside the model repository" in emb.broken[number], number
    assert emb.resolve().served == (1,)


def test_outside_table_folder_and_shared_files_fail_the_table(models: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    version(outside, "ext", 1)
    os.symlink(outside / "ext", models / "ext")
    (tmp_path / "opts.toml").write_text("padding_idx = 0\n")
    (models / "emb" / "table.toml").unlink()
    (models / "emb" / "table.toml").symlink_to(tmp_path / "opts.toml")
    repository = discover_repository(models)
    assert "outside the model repository" in repository.problems["ext"]
    assert "outside the model repository" in repository.problems["emb"]
    assert not repository.tables


def test_configmap_symlinks_inside_serve(tmp_path: Path) -> None:
    models = tmp_path / "models"
    stamp = models / "..2024_01_01"
    write_npy(stamp / "emb" / "4", "table", random_table(10, 4))
    (models / "..data").symlink_to("..2024_01_01")
    (models / "emb").symlink_to("..data/emb")
    emb = discover_repository(models).tables["emb"]
    assert emb.resolve().served == (4,)


def test_has_tables_counts_versioned_tables_and_groups(tmp_path: Path) -> None:
    """The demo table is written only where there is no table: versioned ones count."""
    models = tmp_path / "models"
    (models / "notes").mkdir(parents=True)
    assert not has_tables(models)
    version(models, "emb", 1)
    assert has_tables(models)
    (models / "emb").rename(tmp_path / "emb")
    (models / "g" / "1").mkdir(parents=True)
    (models / "g" / "group.toml").write_text("")
    assert has_tables(models)


def test_missing_repository(tmp_path: Path) -> None:
    repository = discover_repository(tmp_path / "nope")
    assert not repository.flat and not repository.tables
    assert "not found" in next(iter(repository.problems.values()))


def test_the_registry_loop_holds_back_a_failing_version_until_it_changes(models: Path) -> None:
    """What the registry will do: resolve, load, hold back what failed, resolve again."""
    (models / "emb" / "table.toml").write_text("versions = {latest = 1}\n")
    version(models, "emb", 4)
    held = HeldBack()

    def settle(table: VersionedTable, loads: Callable[[int], bool]) -> tuple[int, ...]:
        while True:
            resolution = table.resolve(held.reasons(table.identities))
            failing = [n for n in resolution.served if not loads(n)]
            if not failing:
                return resolution.served
            for number in failing:
                held.note(number, table.identities[number], "not an .npy file")

    table = discover_repository(models).tables["emb"]
    assert settle(table, lambda n: n != 4) == (3,)  # 4 fails: 3 serves on
    assert "emb/4" in table.resolve(held.reasons(table.identities)).failures
    assert settle(table, lambda n: True) == (3,)  # unchanged, 4 is not tried again
    np.save(models / "emb" / "4" / "table.npy", random_table(12, 4))  # fixed
    table = discover_repository(models).tables["emb"]
    assert settle(table, lambda n: True) == (4,)
