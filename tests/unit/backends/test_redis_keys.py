"""Redis key layout: fixed-width readable keys, RESP commands built vectorised."""

from __future__ import annotations

import numpy as np
from redis.crc import key_slot

from service.backends.redis_store import RedisLayout


def test_keys_are_fixed_width_and_tagged_by_id_modulo_tags() -> None:
    keys = RedisLayout("demo").row_keys("abc", 128)
    assert keys.key(5) == b"emb:{demo:abc:005}:000000000005"
    assert keys.key(133) == b"emb:{demo:abc:005}:000000000133"
    assert key_slot(keys.key(5)) == key_slot(keys.key(133)) == keys.slots[5]
    assert len(set(keys.slots)) > 100  # the tags spread over the slots


def test_mget_commands_group_ids_by_tag_and_keep_their_order() -> None:
    keys = RedisLayout("t").row_keys("v", 4)
    ids = np.array([9, 2, 5, 6, 1], dtype=np.int64)
    order, commands = keys.commands(b"MGET", ids)
    assert ids[order].tolist() == [9, 5, 1, 2, 6]  # by tag (1, 1, 1, 2, 2), stable within one
    heads = [packed.split(b"\r\n")[0] for _, packed in commands]
    assert len(commands) == 2 and sorted(heads) == [b"*3", b"*4"]
    assert all(slot == keys.slots[t] for (slot, _), t in zip(commands, (1, 2), strict=True))


def test_mset_records_carry_the_value_bytes() -> None:
    keys = RedisLayout("t").row_keys("v", 1)
    values = np.arange(8, dtype=np.uint8).reshape(1, 8)
    _, [(_, packed)] = keys.commands(b"MSET", np.array([3]), values)
    key = keys.key(3)
    expected = b"*3\r\n$4\r\nMSET\r\n$%d\r\n%s\r\n$8\r\n%s\r\n" % (len(key), key, values.tobytes())
    assert packed == expected
