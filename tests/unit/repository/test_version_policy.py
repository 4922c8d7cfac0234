"""The ``versions`` and ``[labels]`` keys: strict, named errors, and only where they apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import TableLoadError
from service.repository.options import TableOptions, read_table_options
from service.repository.version_policy import (
    VersionPolicy,
    VersionSelection,
    read_version_policy,
    read_versioned_options,
)


def write(tmp_path: Path, text: str, name: str = "table.toml") -> Path:
    path = tmp_path / name
    path.write_text(text + "\n")
    return path


@pytest.mark.parametrize(
    ("text", "selection"),
    [
        ("", VersionSelection(latest=1)),
        ("versions = {latest = 3}", VersionSelection(latest=3)),
        ("versions = {specific = [5, 3]}", VersionSelection(specific=[3, 5])),
        ("versions = {all = true}", VersionSelection(all=True)),
    ],
)
def test_policies(tmp_path: Path, text: str, selection: VersionSelection) -> None:
    assert read_version_policy(write(tmp_path, text, "group.toml")).versions == selection


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ('versions = {latest = "2"}', "versions.latest: Input should be a valid integer"),
        ("versions = {latest = 0}", "greater than or equal to 1"),
        ("versions = {latest = true}", "versions.latest"),
        ("versions = {all = 1}", "versions.all: Input should be a valid boolean"),
        ("versions = {all = false}", "all = false selects nothing"),
        ("versions = {}", "exactly one of latest, specific, all (got none)"),
        ("versions = {latest = 1, all = true}", "(got latest, all)"),
        ("versions = {lates = 1}", "versions.lates: unknown option; did you mean 'latest'?"),
        ("versions = {specific = []}", "versions.specific"),
        ("versions = {specific = [3, 3]}", "listed twice"),
        ("versions = {specific = [0]}", "positive integers"),
        ("versions = {specific = [1.0]}", "versions.specific.0"),
        ("versions = 2", "versions: Input should be a valid dictionary"),
        ("[labels]\n3 = 3", "label '3' is not"),
        ("[labels]\nStable = 3", "label 'Stable' is not"),
        ("[labels]\n_x = 3", "label '_x' is not"),
        ("[labels]\nstable = true", "labels.stable: Input should be a valid integer"),
        ('[labels]\nstable = "3"', "labels.stable"),
        ("[labels]\nstable = 0", "positive integers"),
        ("labels = 3", "labels"),
    ],
)
def test_bad_policies_are_named_with_the_file(tmp_path: Path, text: str, phrase: str) -> None:
    for reader in (read_version_policy, read_versioned_options):
        path = write(tmp_path, text)
        with pytest.raises(TableLoadError) as error:
            reader(path)
        assert phrase in str(error.value) and str(path) in str(error.value)


def test_labels_are_read(tmp_path: Path) -> None:
    policy = read_version_policy(write(tmp_path, "[labels]\nstable = 3\ncanary-2 = 5\nx_1 = 5"))
    assert policy.labels == {"stable": 3, "canary-2": 5, "x_1": 5}


def test_group_toml_takes_only_the_policy(tmp_path: Path) -> None:
    with pytest.raises(TableLoadError, match=r"padding_idx: unknown key .*member options go in"):
        read_version_policy(write(tmp_path, "padding_idx = 0", "group.toml"))
    assert read_version_policy(None) == VersionPolicy()


def test_table_toml_of_a_versioned_table_splits_policy_and_options(tmp_path: Path) -> None:
    path = write(tmp_path, "padding_idx = 0\nversions = {latest = 2}\n[labels]\nstable = 4")
    policy, options = read_versioned_options(path)
    assert policy.versions.latest == 2 and policy.labels == {"stable": 4}
    assert options == TableOptions(padding_idx=0)
    assert read_table_options(path, versioned=True) == options
    with pytest.raises(TableLoadError, match="max_nrom: unknown option; did you mean"):
        read_versioned_options(write(tmp_path, "max_nrom = 1.0\nversions = {all = true}"))
    assert read_versioned_options(None) == (VersionPolicy(), TableOptions())


@pytest.mark.parametrize("key", ["versions = {latest = 2}", "[labels]\nstable = 1"])
def test_a_flat_table_or_member_with_the_policy_keys_is_an_error(tmp_path: Path, key: str) -> None:
    """A flat table has one version: the keys would silently mean nothing, so they fail it."""
    path = write(tmp_path, key, "flat.toml")
    with pytest.raises(TableLoadError) as error:
        read_table_options(path)
    assert str(path) in str(error.value)
    assert "only the table.toml of a versioned table" in str(error.value)


def test_selection_selects() -> None:
    assert VersionSelection(latest=2).select([1, 5, 3]) == [3, 5]
    assert VersionSelection(latest=2).select([4]) == [4]
    assert VersionSelection(specific=[3, 5]).select([1, 3, 4]) == [3]
    assert VersionSelection(all=True).select([4, 1]) == [1, 4]
    assert VersionSelection(specific=[3, 5]).describe() == "{specific = [3, 5]}"
