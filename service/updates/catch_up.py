"""Which update files bring a reader from its sequence to the newest one, read in order.

A reader at sequence ``s`` needs every update after ``s``: the deltas ``s+1..`` when they are all
there, else (a compaction folded some into a snapshot, then removed them) the newest snapshot
and the deltas after it. A compaction may remove files between the listing and the read: the
listing is then taken again. A snapshot that starts past ``s`` (its older rows were folded into
the table's base file, which this reader does not serve) cannot bring the reader up to date:
``OverlayStale`` says the table must be loaded again.
"""

from __future__ import annotations

from pathlib import Path

from service.updates.delta_files import DELTA, SNAPSHOT, UpdateFile, file_name, listed, read_file

LISTING_ATTEMPTS = 8


class OverlayStale(RuntimeError):
    """Updates this reader lacks now live only in a newer base file: load the table again."""


def files_after(folder: Path, sequence: int) -> list[UpdateFile]:
    """The update files that bring a reader at ``sequence`` to the newest, oldest first."""
    for _ in range(LISTING_ATTEMPTS):
        plan = _plan(folder, sequence)
        if plan is None:
            continue
        try:
            found = [read_file(folder / file_name(number, kind)) for number, kind in plan]
        except FileNotFoundError:  # removed by a compaction since the listing: list again
            continue
        _check_reaches(found, sequence, folder)
        return found
    raise OverlayStale(f"{folder}: the update files kept changing while read")


def _plan(folder: Path, sequence: int) -> list[tuple[int, str]] | None:
    """``(sequence, kind)`` of the files to read, or None when the listing is not whole yet."""
    files = listed(folder)
    deltas = {number for number, kind in files if kind == DELTA and number > sequence}
    newest = max((number for number, _ in files), default=0)
    if newest <= sequence:
        return []
    if all(number in deltas for number in range(sequence + 1, newest + 1)):
        return [(number, DELTA) for number in range(sequence + 1, newest + 1)]
    snapshots = [number for number, kind in files if kind == SNAPSHOT and number > sequence]
    if not snapshots:
        return None  # a delta is missing and no snapshot holds it: a compaction is mid-way
    start = max(snapshots)
    if not all(number in deltas for number in range(start + 1, newest + 1)):
        return None
    return [(start, SNAPSHOT), *((number, DELTA) for number in range(start + 1, newest + 1))]


def _check_reaches(files: list[UpdateFile], sequence: int, folder: Path) -> None:
    """``OverlayStale`` when the first file starts past ``sequence`` (rows folded elsewhere)."""
    if files and files[0].since > sequence:
        raise OverlayStale(
            f"{folder}: updates {sequence + 1}..{files[0].since} were folded into a newer base "
            "file of the table; load the table again"
        )
