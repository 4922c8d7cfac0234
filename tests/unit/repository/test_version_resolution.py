"""Which versions are served: the policy over what is present, less what is held back."""

from __future__ import annotations

import pytest

from service.repository.version_policy import VersionPolicy, VersionSelection
from service.repository.versions import HeldBack, resolve, version_changes


def policy(labels: dict[str, int] | None = None, **selection: object) -> VersionPolicy:
    return VersionPolicy(
        versions=VersionSelection.model_validate(selection or {"latest": 1}), labels=labels or {}
    )


@pytest.mark.parametrize(
    ("selection", "present", "served"),
    [
        ({"latest": 1}, [1, 3, 2], (3,)),
        ({"latest": 2}, [1, 3, 2], (2, 3)),
        ({"latest": 5}, [1, 3], (1, 3)),
        ({"specific": [3, 1]}, [1, 2, 3, 4], (1, 3)),
        ({"all": True}, [4, 1, 2], (1, 2, 4)),
    ],
)
def test_policy_over_present(selection: dict[str, object], present: list[int], served) -> None:
    resolution = resolve("emb", policy(**selection), present)
    assert resolution.served == served and resolution.default == served[-1]
    assert resolution.failures == {}


def test_a_held_back_version_never_blocks_the_next_one_down() -> None:
    failed = {9: "emb/9/t.npy: not an .npy file"}
    resolution = resolve("emb", policy(latest=1), [7, 8, 9], failed)
    assert resolution.served == (8,) and resolution.default == 8
    assert resolution.failures == {"emb/9": failed[9]}
    two = resolve("emb", policy(latest=2), [7, 8, 9], failed)
    assert two.served == (7, 8) and set(two.failures) == {"emb/9"}


def test_only_held_back_versions_in_the_policy_are_named() -> None:
    failed = {1: "old and broken", 9: "new and broken"}
    assert set(resolve("emb", policy(latest=1), [1, 5, 9], failed).failures) == {"emb/9"}
    assert set(resolve("emb", policy(latest=5), [1, 5, 9], failed).failures) == {"emb/1", "emb/9"}
    assert set(resolve("emb", policy(all=True), [1, 5, 9], failed).failures) == {"emb/1", "emb/9"}
    specific = resolve("emb", policy(specific=[5, 9]), [1, 5, 9], failed)
    assert specific.served == (5,) and set(specific.failures) == {"emb/9"}


def test_failures_of_folders_no_longer_present_are_moot() -> None:
    resolution = resolve("emb", policy(all=True), [1, 2], {3: "gone since"})
    assert resolution.served == (1, 2) and resolution.failures == {}


def test_a_specific_version_without_its_folder_is_named() -> None:
    resolution = resolve("emb", policy(specific=[3, 5]), [3])
    assert resolution.served == (3,)
    assert "no version folder 5" in resolution.failures["emb/5"]


def test_nothing_served_is_the_table_failing() -> None:
    empty = resolve("emb", policy(), [])
    assert empty.served == () and empty.default is None
    assert "no numbered version folder" in empty.failures["emb"]
    all_failed = resolve("emb", policy(all=True), [1, 2], {1: "a", 2: "b"})
    assert "held back: 1, 2" in all_failed.failures["emb"] and all_failed.default is None


def test_labels_bind_to_served_versions_and_default_wins() -> None:
    resolution = resolve("emb", policy({"stable": 3, "default": 3, "canary": 5}, all=True), [3, 5])
    assert resolution.labels == {"stable": 3, "default": 3, "canary": 5}
    assert resolution.default == 3
    assert resolution.version_of("canary") == 5 and resolution.version_of("5") == 5
    assert resolution.version_of("4") is None and resolution.version_of("beta") is None
    assert resolution.detail() == {
        "versions": ["3", "5"],
        "labels": {"canary": "5", "default": "3", "stable": "3"},
    }


@pytest.mark.parametrize(
    ("present", "failed", "why"),
    [
        ([3, 5], {}, "does not serve it"),  # out of {latest = 1}
        ([5], {}, "no such version folder"),
        ([3, 5], {3: "bad file"}, "held back (bad file)"),
    ],
)
def test_a_label_naming_a_version_not_served_is_named_and_the_rest_serves(
    present: list[int], failed: dict[int, str], why: str
) -> None:
    resolution = resolve("emb", policy({"stable": 3}), present, failed)
    assert resolution.served == (5,) and resolution.labels == {}
    assert why in resolution.failures["emb@stable"]
    assert resolution.failures["emb@stable"].startswith("label stable = 3: version 3 is not served")


def test_a_moved_label_that_fails_stays_where_it_was() -> None:
    """TF Serving refuses a label on an unavailable version; the old binding serves on."""
    moved = policy({"stable": 9, "default": 9}, latest=2)
    resolution = resolve("emb", moved, [7, 8, 9], {9: "broken"}, {"stable": 8, "default": 7})
    assert resolution.served == (7, 8)
    assert resolution.labels == {"stable": 8, "default": 7} and resolution.default == 7
    assert "stable still names version 8" in resolution.failures["emb@stable"]
    # A previous binding to a version no longer served is not kept.
    gone = resolve("emb", moved, [8, 9], {9: "broken"}, {"stable": 7, "default": 7})
    assert gone.labels == {} and gone.default == 8
    assert "unpinned requests get version 8" in gone.failures["emb@default"]


def test_version_changes_by_identity() -> None:
    changes = version_changes({1: "a", 2: "b", 3: "c"}, {2: "b", 3: "x", 4: "d"})
    assert (changes.appeared, changes.disappeared, changes.changed) == ((4,), (1,), (3,))
    assert changes and not version_changes({1: "a"}, {1: "a"})


def test_held_back_forgets_a_failure_once_the_version_changes() -> None:
    held = HeldBack()
    held.note(9, "id-1", "truncated")
    assert held.reasons({8: "x", 9: "id-1"}) == {9: "truncated"}
    assert held.reasons({8: "x", 9: "id-2"}) == {}  # fixed: try it again
    assert held.reasons({8: "x", 9: "id-1"}) == {}  # and the old failure is gone for good
    held.note(9, "id-1", "truncated")
    assert held.reasons({8: "x"}) == {}  # the folder left
