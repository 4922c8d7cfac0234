"""``POST /v1/groups/{group}/lookup``: several members of a group, all at ONE version.

The group version is picked once (``GroupSet.pick``): every member answers from that one
snapshot, whatever flips while the request runs. Each member's rows come the way a single
lookup's do (the row-text cache of that member version included).
"""

from __future__ import annotations

from service.decoding.group_request import GroupLookupRequest
from service.errors import InvalidRequest, ServiceError
from service.results import GroupVectors, Vectors
from service.tables.version_sets import GroupVersion
from service.usecases import lookup


async def group_lookup(
    group: GroupVersion, request: GroupLookupRequest, max_output_bytes: int
) -> GroupVectors:
    """Each member's vectors at ``group``'s version; errors name the member (``detail.table``)."""
    unknown = sorted(set(request.members) - set(group.members))
    if unknown:
        raise InvalidRequest(
            f"group {group.group!r} has no member {', '.join(unknown)}",
            {"table": unknown[0], "members": sorted(group.members)},
        )
    answers: list[tuple[str, Vectors]] = []
    for stem, member in request.members.items():
        try:
            plan = lookup.lookup(group.members[stem], member, request.encoding, max_output_bytes)
            answers.append((stem, await plan.run()))
        except ServiceError as exc:
            exc.detail = {**(exc.detail or {}), "table": stem}
            raise
    return GroupVectors(group.group, group.version, answers)
