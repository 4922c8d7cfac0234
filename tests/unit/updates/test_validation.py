"""What an update must be before anything is written (shared by file and Redis tables)."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import IdOutOfRange, InvalidIds, InvalidRequest
from service.updates.validation import NotUpdatable, check_update


def test_a_good_update_is_cast_to_the_stored_dtype() -> None:
    update = check_update(np.array([3, 1], np.int32), np.ones((2, 4)), 10, 4, "float16", "u1")
    assert update.ids.dtype == np.int64 and update.ids.tolist() == [3, 1]
    assert update.rows.dtype == np.float16 and update.rows.shape == (2, 4)
    assert update.update_id == "u1"


@pytest.mark.parametrize(
    ("ids", "rows", "error"),
    [
        ([10], np.ones((1, 4)), IdOutOfRange),
        ([-1], np.ones((1, 4)), IdOutOfRange),
        ([1, 1], np.ones((2, 4)), InvalidIds),
        ([[1]], np.ones((1, 4)), InvalidIds),
        ([1.5], np.ones((1, 4)), InvalidIds),
        ([], np.ones((0, 4)), InvalidRequest),
        ([1], np.ones((1, 3)), InvalidRequest),
        ([1, 2], np.ones((1, 4)), InvalidRequest),
        ([1], np.full((1, 4), np.nan), InvalidRequest),
        ([1], np.full((1, 4), np.inf), InvalidRequest),
    ],
)
def test_bad_updates_are_refused(ids: list[int], rows: np.ndarray, error: type) -> None:
    with pytest.raises(error):
        check_update(np.array(ids), rows, 10, 4, "float32")


def test_a_value_too_large_for_float16_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="too large"):
        check_update(np.array([1]), np.full((1, 2), 1e6), 10, 2, "float16")


def test_int8_tables_are_not_updatable() -> None:
    with pytest.raises(NotUpdatable) as caught:
        check_update(np.array([1]), np.ones((1, 2)), 10, 2, "int8")
    assert caught.value.status == 409 and caught.value.code == "not_updatable"


@pytest.mark.parametrize("update_id", ["", "x" * 129])
def test_update_ids_are_1_to_128_characters(update_id: str) -> None:
    with pytest.raises(InvalidRequest):
        check_update(np.array([1]), np.ones((1, 2)), 10, 2, "float32", update_id)
    check_update(np.array([1]), np.ones((1, 2)), 10, 2, "float32", "x" * 128)
