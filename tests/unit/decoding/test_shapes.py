"""Shape and length validators: exact Python integers, never numpy's wrapping int64."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.decoding.requests import binary_ids, decode_sequences
from service.decoding.shapes import (
    MAX_RANK,
    check_dims,
    check_lengths,
    check_max_length,
    check_output_bytes,
    header_integers,
)
from service.decoding.v2_request import decode_v2_infer
from service.errors import InvalidBody, InvalidRequest, PayloadTooLarge, json_safe

BIG = 2**62


def test_header_integers_take_only_ascii_decimals() -> None:
    assert header_integers(" 3, 0 ,12", "X") == [3, 0, 12]
    assert header_integers(str(2**70), "X") == [2**70]  # exact, not a float
    for bad in ("-1", "+3", "3_000", "1e3", "0x10", "٣", "3.0", "9" * 65):
        with pytest.raises(InvalidBody):
            header_integers(bad, "X")


def test_check_dims_products_do_not_wrap() -> None:
    assert check_dims([2, 3], "s", 10) == 6
    assert check_dims([], "s", 10) == 1
    # int64 would make 2**62 * 4 == 0; Python ints do not, and the cap refuses each dim.
    with pytest.raises(PayloadTooLarge):
        check_dims([0, BIG, 4], "s", 1000)
    with pytest.raises(InvalidRequest):
        check_dims([1] * (MAX_RANK + 1), "s", 10)
    with pytest.raises(InvalidRequest):
        check_dims([2, -1], "s", 10)
    with pytest.raises(InvalidRequest):
        check_dims([True], "s", 10)


def test_check_lengths_sums_exactly() -> None:
    assert check_lengths([3, 0, 1], "L", 10) == 4
    with pytest.raises(PayloadTooLarge):
        check_lengths([BIG] * 4, "L", 10**6)  # sums to 0 in int64
    with pytest.raises(PayloadTooLarge):
        check_lengths([6, 6], "L", 10)  # each under, the sum over
    with pytest.raises(PayloadTooLarge):
        check_lengths([0] * 11, "L", 10)  # more sequences than the limit


def test_max_length_and_output_cap() -> None:
    assert check_max_length(None, 10) is None and check_max_length(10, 10) == 10
    for value in (11, BIG, 2**63):
        with pytest.raises(PayloadTooLarge):
            check_max_length(value, 10)
    for value in (-1, True, 1.5, "3"):
        with pytest.raises(InvalidRequest):
            check_max_length(value, 10)
    check_output_bytes(4, 4, 4, 64)
    with pytest.raises(PayloadTooLarge) as error:
        check_output_bytes(BIG, BIG, 4, 64)
    assert error.value.detail["bytes"] == str(BIG * BIG * 4)  # JSON-safe


def test_error_details_are_json_safe() -> None:
    detail = {"a": 2**64, "b": [np.int64(3), -(2**70)], "c": float("nan"), "d": (1, 2)}
    safe = json_safe(detail)
    assert safe == {"a": str(2**64), "b": [3, str(-(2**70))], "c": "nan", "d": [1, 2]}
    orjson.dumps(PayloadTooLarge("x", detail).detail)  # writable


def test_binary_shapes() -> None:
    with pytest.raises(InvalidBody):  # 2**62 * 2**62 is not 0 in exact arithmetic
        binary_ids(b"", None, f"{BIG},{BIG}", 100)
    with pytest.raises(PayloadTooLarge):
        binary_ids(b"", None, f"0,{BIG}", 100)
    assert binary_ids(b"", None, "0,100", 100).shape == (0, 100)


def test_sequences_headers() -> None:
    headers = {"x-lengths": ",".join([str(BIG)] * 4)}
    with pytest.raises(PayloadTooLarge):
        decode_sequences(b"", "application/octet-stream", headers, 100)
    one = np.array([1], "<i8").tobytes()
    with pytest.raises(PayloadTooLarge):
        decode_sequences(
            one, "application/octet-stream", {"x-lengths": "1", "x-max-length": str(BIG)}, 100
        )
    with pytest.raises(InvalidRequest):
        decode_sequences(
            one, "application/octet-stream", {"x-lengths": "1", "x-max-length": "-1"}, 100
        )


def test_v2_shapes() -> None:
    def body(shape: list) -> bytes:
        return orjson.dumps(
            {"inputs": [{"name": "ids", "datatype": "INT64", "shape": shape, "data": []}]}
        )

    with pytest.raises(PayloadTooLarge):
        decode_v2_infer(body([0, BIG, BIG]), None, 100, ("embeddings",))
    assert decode_v2_infer(body([0, 100]), None, 100, ("embeddings",)).ids.shape == (0, 100)
