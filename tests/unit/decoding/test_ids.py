"""Id decoding: numpy-side checks name the first bad element."""

from __future__ import annotations

import numpy as np
import pytest

from service.decoding.body import request_media_type, wants_binary
from service.decoding.ids import check_in_range, ids_array
from service.decoding.requests import binary_ids
from service.errors import IdOutOfRange, InvalidBody, InvalidIds, UnsupportedMediaType


@pytest.mark.parametrize(
    ("value", "shape"), [(5, ()), ([1, 2], (2,)), ([[1], [2]], (2, 1)), ([], (0,)), ([[]], (1, 0))]
)
def test_valid_ids(value, shape) -> None:
    ids = ids_array(value, check_booleans=True)
    assert ids.dtype == np.int64 and ids.shape == shape


@pytest.mark.parametrize(
    ("value", "error", "position"),
    [
        ([1, True], InvalidIds, [1]),
        ([[1, 2], [3, False]], InvalidIds, [1, 1]),
        ([[[1], [True]]], InvalidIds, [0, 1, 0]),  # found below lists of lists
        (True, InvalidIds, []),
        ([1, 2.5], InvalidIds, [1]),
        ([1, None], InvalidIds, [1]),
        ([1, "2"], InvalidIds, [0]),
        ([1, 2**64 - 1], IdOutOfRange, [1]),
        ([2**70], IdOutOfRange, [0]),
        ([-(2**70)], IdOutOfRange, [0]),
    ],
)
def test_invalid_ids(value, error, position) -> None:
    with pytest.raises(error) as raised:
        ids_array(value, check_booleans=True)
    assert raised.value.detail["position"] == position


@pytest.mark.parametrize(
    ("value", "position", "says"),
    [
        ([[1, 2], [3]], [1], "ids[1] has 1 item, ids[0] has 2 items"),
        ([[[1, 2], [3, 4]], [[5, 6], [7]]], [1, 1], "ids[1][1] has 1 item, ids[0][0] has 2 items"),
        ([1, [2]], [1], "ids[1] has 1 item, ids[0] is a number"),
    ],
)
def test_ragged_ids_say_where_and_point_to_sequences(value, position, says) -> None:
    with pytest.raises(InvalidIds) as raised:
        ids_array(value, check_booleans=False)
    assert raised.value.detail["position"] == position
    assert says in str(raised.value)
    assert "/v1/tables/{table}/sequences" in str(raised.value)
    assert "setting an array element" not in str(raised.value)


def test_ragged_lists_other_than_ids_are_not_sent_to_sequences() -> None:
    with pytest.raises(InvalidIds) as raised:
        ids_array([[1, 2], [3]], check_booleans=False, what="bags")
    assert "bags[1] has 1 item" in str(raised.value) and "sequences" not in str(raised.value)


def test_range_check_positions() -> None:
    with pytest.raises(IdOutOfRange) as raised:
        check_in_range(np.array([[0, 1], [10, -1]]), 10)
    assert raised.value.detail == {"id": 10, "position": [1, 0], "rows": 10}
    check_in_range(np.array([0, 9]), 10)


def test_binary_ids() -> None:
    assert binary_ids(np.array([1, 2], "<i4").tobytes(), "int32", "2,1").shape == (2, 1)
    with pytest.raises(InvalidBody):
        binary_ids(b"\x00" * 7, None, None)
    with pytest.raises(InvalidBody):
        binary_ids(b"\x00" * 16, None, "3")


def test_negotiation() -> None:
    assert request_media_type(None) == "application/json"
    assert request_media_type("application/json; charset=utf-8") == "application/json"
    with pytest.raises(UnsupportedMediaType):
        request_media_type("text/plain")
    assert wants_binary("application/octet-stream")
    assert not wants_binary("application/json")
    assert not wants_binary(None)
    assert wants_binary("application/json;q=0.1, application/octet-stream")
