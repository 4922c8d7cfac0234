"""Decoder of the group lookup: one JSON body, every member's ids decoded from it once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.decoding.body import choice, json_object
from service.decoding.ids import body_may_hold_booleans, ids_array, keys_array
from service.decoding.requests import ENCODINGS, OUTPUT_DTYPES, LookupRequest
from service.decoding.shapes import check_id_count
from service.errors import InvalidRequest, ServiceError

GROUP_FIELDS = frozenset(("tables", "encoding", "dtype"))
MEMBER_FIELDS = frozenset(("ids", "keys"))


@dataclass(frozen=True)
class GroupLookupRequest:
    """Each member's lookup (stem -> request), one ``encoding`` and ``dtype`` for all."""

    members: dict[str, LookupRequest]
    encoding: str = "float"
    dtype: str = "float32"

    def ids_count(self) -> int:
        """Every id of every member (admission counts them all)."""
        return sum(
            len(r.keys) if r.keys is not None else (r.ids.size if r.ids is not None else 0)
            for r in self.members.values()
        )


def decode_group_lookup(body: bytes, max_ids: int) -> GroupLookupRequest:
    """``{"tables": {"user": {"ids": I}, ...}, "encoding": ..., "dtype": ...}``: parsed once;
    ``max_ids`` bounds the ids of all members together."""
    fields = json_object(body, GROUP_FIELDS, ("tables",))
    tables = fields["tables"]
    if type(tables) is not dict or not tables:
        raise InvalidRequest('tables must be an object: member name -> {"ids": ...}')
    encoding = choice(fields.get("encoding"), "encoding", ENCODINGS, "float")
    dtype = choice(fields.get("dtype"), "dtype", OUTPUT_DTYPES, "float32")
    members: dict[str, LookupRequest] = {}
    total = 0
    booleans = body_may_hold_booleans(body)  # one scan of the body for every member
    for stem, member in tables.items():
        try:
            members[stem] = _member(member, encoding, dtype, max_ids, booleans)
        except ServiceError as exc:
            exc.detail = {**(exc.detail or {}), "table": stem}
            raise
        total += GroupLookupRequest({stem: members[stem]}).ids_count()
        check_id_count(total, max_ids)
    return GroupLookupRequest(members, encoding, dtype)


def _member(member: Any, encoding: str, dtype: str, max_ids: int, booleans: bool) -> LookupRequest:
    if type(member) is not dict or not MEMBER_FIELDS.issuperset(member) or len(member) != 1:
        raise InvalidRequest('each member takes {"ids": ...} or {"keys": ...}')
    if "keys" in member:
        keys, shape = keys_array(member["keys"])
        check_id_count(len(keys), max_ids)
        return LookupRequest(None, encoding, dtype, keys, shape)
    ids = ids_array(member["ids"], check_booleans=booleans)
    check_id_count(ids.size, max_ids)
    return LookupRequest(ids, encoding, dtype)
