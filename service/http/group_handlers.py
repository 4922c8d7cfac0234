"""What the /v1/groups routes run: the group resolver (at ``version=``), the group lookup's
decoder and use case, and the group documents."""

from __future__ import annotations

from service.decoding.group_request import GroupLookupRequest, decode_group_lookup
from service.http.call import Call
from service.metrics import UNKNOWN_TABLE
from service.results import Document, GroupVectors
from service.tables.version_sets import GroupVersion
from service.usecases import group_lookup, tables


def resolve_group(call: Call) -> None:
    """The path's group at the query's ``version=`` (the default without one), picked once
    for the whole request; it names the answer's ``X-Table-Version``."""
    call.table_label = UNKNOWN_TABLE  # a name becomes a metrics label once it is served
    picked = call.services.registry.group(call.params["group"]).pick(call.version())
    call.table_label = call.params["group"]
    call.group = picked
    call.version_header = picked.version


def _group_version(call: Call) -> GroupVersion:
    assert call.group is not None, "the route resolves no group"
    return call.group


def group_lookup_body(call: Call) -> GroupLookupRequest:
    """The group lookup body: every member's ids, decoded from one parse."""
    return decode_group_lookup(call.body, call.services.settings.max_ids)


async def lookup(call: Call, request: GroupLookupRequest) -> GroupVectors:
    """Every member asked, at one group version (picked once, here)."""
    limit = call.services.settings.max_output_bytes
    return await group_lookup.group_lookup(_group_version(call), request, limit)


async def list_groups(call: Call, _: None) -> Document:
    """Every group's GroupInfo."""
    return tables.list_groups(call.services.registry)


async def group_info(call: Call, _: None) -> Document:
    """One group's GroupInfo."""
    return tables.group_info(call.services.registry, call.params["group"])
