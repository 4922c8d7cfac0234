"""Groups: members as files of numbered folders, served only whole, flipping together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.repository.groups import member_set
from service.repository.layout import discover_repository
from service.repository.versions import version_changes
from tests.support.tables import random_table


def members(models: Path, number: int, *stems: str, group: str = "two_tower") -> Path:
    folder = models / group / str(number)
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        np.save(folder / f"{stem}.npy", random_table(10, 4, number))
    return folder


@pytest.fixture
def models(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    members(models, 7, "user", "item")
    members(models, 8, "user", "item")
    (models / "two_tower" / "group.toml").write_text(
        "versions = {latest = 2}\n[labels]\ndefault = 7\n"
    )
    (models / "two_tower" / "user.toml").write_text("padding_idx = 0\n")
    return models


def test_a_group_and_its_members(models: Path) -> None:
    repository = discover_repository(models)
    group = repository.groups["two_tower"]
    assert group.members == ("item", "user") and repository.problems == {}
    assert group.table_names() == ["two_tower.item", "two_tower.user"]
    assert repository.table_names() == ["two_tower.item", "two_tower.user"]
    assert group.member_options["user"].padding_idx == 0
    assert group.member_options["item"].padding_idx is None
    user = group.versions[8].members["user"]
    assert (user.name, user.path, user.version) == (
        "two_tower.user",
        models / "two_tower" / "8" / "user.npy",
        8,
    )
    assert user.options_path == models / "two_tower" / "user.toml"
    assert group.versions[8].members["item"].options_path is None
    resolution = group.resolve()
    assert resolution.served == (7, 8) and resolution.default == 7


def test_a_version_arriving_member_by_member_is_held_back(models: Path) -> None:
    members(models, 9, "user")
    group = discover_repository(models).groups["two_tower"]
    assert "lacks member item, which version 8 has" in group.broken[9]
    resolution = group.resolve()
    assert resolution.served == (7, 8) and "lacks member item" in resolution.failures["two_tower/9"]
    members(models, 9, "item")
    assert discover_repository(models).groups["two_tower"].resolve().served == (8, 9)


def test_a_new_member_landing_first_holds_back_only_its_version(models: Path) -> None:
    members(models, 9, "ctx")
    group = discover_repository(models).groups["two_tower"]
    assert group.members == ("item", "user") and group.resolve().served == (7, 8)
    assert "has ctx, no member of the group" in group.broken[9]
    members(models, 9, "user", "item")  # now whole, with one more member
    group = discover_repository(models).groups["two_tower"]
    assert group.members == ("ctx", "item", "user")
    assert group.resolve().served == (9,)  # 7 and 8 lack ctx: they leave service
    assert "lacks member ctx, which version 9 has" in group.broken[8]


def test_dropping_a_member_needs_the_older_folders_without_it(models: Path) -> None:
    members(models, 9, "user")  # item dropped on purpose: indistinguishable from a partial copy
    assert 9 in discover_repository(models).groups["two_tower"].broken
    for number in (7, 8):
        (models / "two_tower" / str(number) / "item.npy").unlink()
    group = discover_repository(models).groups["two_tower"]
    assert group.members == ("user",) and group.resolve().served == (8, 9)


def test_member_set_is_the_newest_version_holding_every_older_member() -> None:
    assert member_set({7: {"a", "b"}, 8: {"a"}}) == (7, {"a", "b"})
    assert member_set({7: {"a"}, 8: {"a", "b"}, 9: {"c"}}) == (8, {"a", "b"})
    assert member_set({7: set(), 8: {"a"}}) == (8, {"a"})
    assert member_set({}) == (None, set())


def test_a_member_failing_to_load_holds_its_version_back_for_all(models: Path) -> None:
    group = discover_repository(models).groups["two_tower"]
    resolution = group.resolve(failed={8: "member user: not an .npy file"})
    assert resolution.served == (7,)
    assert resolution.failures["two_tower/8"] == "member user: not an .npy file"


def test_bad_member_options_fail_the_group(models: Path) -> None:
    (models / "two_tower" / "user.toml").write_text("versions = {latest = 1}\n")
    repository = discover_repository(models)
    assert "two_tower" not in repository.groups
    assert "only the table.toml of a versioned table" in repository.problems["two_tower"]


def test_bad_group_toml_fails_the_group(models: Path) -> None:
    (models / "two_tower" / "group.toml").write_text("padding_idx = 0\n")
    assert "unknown key" in discover_repository(models).problems["two_tower"]


def test_options_for_no_member_are_named_and_stop_nothing(models: Path) -> None:
    (models / "two_tower" / "usr.toml").write_text("padding_idx = 0\n")  # a typo
    group = discover_repository(models).groups["two_tower"]
    assert "options for usr, which no version folder holds" in group.problems["two_tower.usr"]
    resolution = group.resolve()
    assert resolution.served == (7, 8) and "two_tower.usr" in resolution.failures


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        (["user.npy", "user.onnx", "item.npy"], "member user is both"),
        (["user.v2.npy", "user.npy", "item.npy"], "not a valid member name"),
        ([], "lacks member item, user"),
        (["user.npy", "item.npy", "user.toml"], "a version folder holds no options"),
    ],
)
def test_bad_version_folders_are_held_back(models: Path, files: list[str], reason: str) -> None:
    folder = members(models, 9)
    for name in files:
        (folder / name).write_bytes(b"x")
    group = discover_repository(models).groups["two_tower"]
    assert reason in group.broken[9] and group.resolve().served == (7, 8)


def test_a_group_with_no_version_is_unavailable_named(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "g").mkdir(parents=True)
    (models / "g" / "group.toml").write_text("")
    resolution = discover_repository(models).groups["g"].resolve()
    assert resolution.served == () and "no version to serve" in resolution.failures["g"]


def test_group_names_and_clashes(models: Path) -> None:
    (models / "two.tower").mkdir()
    (models / "two.tower" / "group.toml").write_text("")
    np.save(models / "two_tower.user.npy", random_table(10, 4))  # a flat table, same name
    repository = discover_repository(models)
    assert "not a valid group name" in repository.problems["two.tower"]
    assert "defined more than once" in repository.problems["two_tower.user"]
    assert "two_tower" not in repository.groups and "two_tower.user" not in repository.flat
    assert "two_tower" in repository.problems


def test_group_version_identity(models: Path) -> None:
    before = discover_repository(models).groups["two_tower"].identities
    (models / "two_tower" / "group.toml").write_text("versions = {all = true}\n")
    assert discover_repository(models).groups["two_tower"].identities == before
    np.save(models / "two_tower" / "8" / "item.npy", random_table(12, 4))
    after = discover_repository(models).groups["two_tower"].identities
    assert version_changes(before, after).changed == (8,)
    (models / "two_tower" / "item.toml").write_text("mask_zero = true\n")
    again = discover_repository(models).groups["two_tower"].identities
    assert version_changes(after, again).changed == (7, 8)


def test_member_vocabulary_own_then_shared(models: Path) -> None:
    (models / "two_tower" / "user.vocab").write_text("shared\n")
    (models / "two_tower" / "8" / "user.vocab").write_text("own\n")
    group = discover_repository(models).groups["two_tower"]
    assert group.versions[8].members["user"].vocab_path == models / "two_tower/8/user.vocab"
    assert group.versions[7].members["user"].vocab_path == models / "two_tower/user.vocab"
    assert group.versions[7].members["item"].vocab_path is None


def test_symlinks_out_of_a_group_are_refused(models: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    members(outside, 1, "user", "item", group="g")
    (models / "two_tower" / "9").symlink_to(outside / "g" / "1")
    (models / "two_tower" / "8" / "user.npy").unlink()
    (models / "two_tower" / "8" / "user.npy").symlink_to(outside / "g" / "1" / "user.npy")
    (tmp_path / "secret.vocab").write_text("secret\n")
    (models / "two_tower" / "item.vocab").symlink_to(tmp_path / "secret.vocab")
    group = discover_repository(models).groups["two_tower"]
    for number in (7, 8, 9):
        assert "outside the model repository" in group.broken[number], number
    assert group.resolve().served == ()


def test_a_group_folder_with_a_table_file_directly_is_a_problem(models: Path) -> None:
    np.save(models / "two_tower" / "stray.npy", random_table(10, 4))
    repository = discover_repository(models)
    assert "two_tower" not in repository.groups
    assert "holds a table file directly" in repository.problems["two_tower"]
