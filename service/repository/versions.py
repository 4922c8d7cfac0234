"""Versions and groups of the model repository: what is served, and how a registry follows it.

The model (API.md, "Versions" and "Groups: tables that flip together")
-----------------------------------------------------------------------
``discover_repository(DIR)`` (service/repository/layout.py) reads the repository into a
``Repository`` of four parts; nothing here loads a table or touches serving:

- ``flat``: today's tables (``DIR/<name>.npy|.onnx``, a folder with the file directly in it,
  Redis ``DIR/<name>.toml``), exactly what ``discover_tables`` returns. One version each,
  identified by the file hash the registry computes today.
- ``tables``: versioned tables, ``VersionedTable``: a folder ``DIR/<name>/`` with numbered
  version folders ``DIR/<name>/<N>/`` (``N`` written ``[1-9][0-9]*``; ``0`` and ``07`` are named
  problems, never versions), each holding ONE table file (any name, ``.npy`` or ``.onnx``) plus
  its int8 scales, ONNX external data and ``table.vocab``. ``DIR/<name>/table.toml`` holds the
  options of every version and the ``versions``/``[labels]`` policy (version_policy.py);
  ``DIR/<name>/table.vocab`` is the vocabulary of every version without its own.
- ``groups``: ``Group``: a folder ``DIR/<group>/`` holding ``group.toml`` (policy only); each
  ``DIR/<group>/<N>/`` holds the members as files (``7/user.npy``, ``7/item.onnx``, with
  ``7/user.scales.npy``, ``7/user.vocab``); member ``<stem>`` is the table ``<group>.<stem>``,
  its options ``DIR/<group>/<stem>.toml``, its shared vocabulary ``DIR/<group>/<stem>.vocab``.
- ``problems``: names that cannot be served at all (bad ``table.toml``, a folder mixing a table
  file and numbered folders, a folder resolving outside ``DIR``, a name defined twice).

Every file and folder, version folders and everything in them included, must resolve inside
``DIR`` (``outside_reason``); hidden entries (``.9.tmp``) are skipped, so copying a version into
a hidden folder and renaming it to ``9`` makes it appear whole (the way to publish a version).

Serving: ``resolve`` (here) -> ``Resolution``
---------------------------------------------
A version is *served* when it is in the policy and loaded. ``resolve`` takes the versions
present and those held back (``failed``: number -> reason: broken folders, incomplete group
versions, versions that failed to load) and applies the policy to the rest, so a held-back
version never blocks the next one down: with ``{latest = 1}``, 9 failing keeps 8 served. The
registry follows it as a loop: resolve; load what is served and not loaded; add each version
that fails to ``failed`` (``HeldBack`` forgets a failure once the version's identity changes,
so a fixed version is tried again); resolve again, until nothing new fails; then swap the
served set in at once and retire what left it (after its in-flight requests).

- Labels bind only to served versions. A label naming a version not served is a failure keyed
  ``"<name>@<label>"`` (the other versions serve); it keeps naming the version it named before
  (``previous_labels``, the served ``Resolution.labels``) while that one is still served: a
  label moved to a version that fails to load stays where it was, as TF Serving refuses it.
- The default version is the label ``default`` when bound, else the highest served.
- Failure keys: ``"<name>/<N>"`` a held-back version in the policy (one out of the policy is
  not named); ``"<name>@<label>"`` a label; ``"<name>"`` nothing served at all (the table or
  group is then unavailable); ``"<name>/07"`` a digit folder that is no version number and
  ``"<group>.<stem>"`` member options for no member (both stop nothing).
- Groups resolve the same way, a group version being held back when it lacks a member (see
  ``Group``: the member set is that of the newest version holding every member of the older
  ones) or when a member failed to load: it flips, and retires, for all its members at once.

Change detection: ``TableVersion.identity`` / ``GroupVersion.identity`` hash the size and mtime
of every file of the version folder plus the options (their parsed value, so editing labels or
the policy does not reload versions) and the shared vocabulary. ``version_changes`` compares
the identities seen at two polls: versions appeared, disappeared, changed.

Wiring notes (for the registry and the watcher)
-----------------------------------------------
- Build a version from ``TableVersion.source`` (``version`` set, ``name`` the table's) with
  ``VersionedTable.options``; a member from ``GroupVersion.members[stem]`` with
  ``Group.member_options[stem]``. Do not re-read a versioned table's ``options_path`` with plain
  ``read_table_options``: ``table.toml`` holds the policy too (``versioned=True`` skips it).
- Load a new or changed identity after it stayed the same for one poll (a copy in progress),
  as the watcher does for flat tables; key held-back failures by identity (``HeldBack``).
- A name in ``Repository.problems`` (or a ``"<name>"`` failure) that serves already is like a
  failed reload today: keep serving what serves and name it; resolve again on the next poll.
- Versions are integers here; the HTTP layer writes them as strings (``Resolution.detail``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from service.repository.version_policy import DEFAULT_LABEL, VersionPolicy


@dataclass(frozen=True)
class Resolution:
    """What one versioned table or group serves, once each of ``served`` has loaded."""

    name: str
    served: tuple[int, ...]  # ascending
    labels: Mapping[str, int]  # bound labels only: each names a served version
    default: int | None  # the version an unpinned request gets; None when nothing is served
    failures: Mapping[str, str]  # see the module docstring for the keys

    def version_of(self, selector: str) -> int | None:
        """The served version a request's ``version=`` names (``"3"`` or a label), or None."""
        if selector.isascii() and selector.isdigit():
            number = int(selector)
            return number if number in self.served else None
        return self.labels.get(selector)

    def detail(self) -> dict[str, object]:
        """``404 version_not_found``'s detail: ``{"versions": ["3"], "labels": {"a": "3"}}``."""
        return {
            "versions": [str(number) for number in self.served],
            "labels": {label: str(number) for label, number in sorted(self.labels.items())},
        }


def resolve(
    name: str,
    policy: VersionPolicy,
    present: Iterable[int],
    failed: Mapping[int, str] | None = None,
    previous_labels: Mapping[str, int] | None = None,
) -> Resolution:
    """The versions of ``name`` to serve: ``policy`` over ``present`` less the ``failed`` ones.

    ``failed`` (number -> reason) are held back; only those the policy would have served are
    named (``"<name>/<N>"``). Pure: call it again whenever anything changes.
    """
    present = sorted(set(present))
    # A failure of a folder no longer present is moot (the registry may hold it a while).
    failed = {number: reason for number, reason in (failed or {}).items() if number in present}
    candidates = [number for number in present if number not in failed]
    selection = policy.versions
    served = tuple(selection.select(candidates))
    failures: dict[str, str] = {}
    for number in _held_back_in_policy(policy, failed, served):
        failures[f"{name}/{number}"] = failed[number]
    for number in selection.specific or ():
        if number not in present:
            failures[f"{name}/{number}"] = (
                f"versions = {selection.describe()} names {number}, but there is no version "
                f"folder {number}"
            )
    labels = _bind_labels(name, policy, present, served, failed, previous_labels or {}, failures)
    default = labels.get(DEFAULT_LABEL, served[-1] if served else None)
    if not served:
        failures[name] = _nothing_served(policy, present, failed)
    return Resolution(name, served, labels, default, failures)


def _held_back_in_policy(
    policy: VersionPolicy, failed: Mapping[int, str], served: tuple[int, ...]
) -> list[int]:
    """The failed versions the policy would serve: for ``latest K``, those above the K-th."""
    selection = policy.versions
    if selection.specific is not None:
        return [number for number in sorted(failed) if number in selection.specific]
    if selection.latest is not None and len(served) == selection.latest:
        return [number for number in sorted(failed) if number > served[0]]
    return sorted(failed)


def _bind_labels(
    name: str,
    policy: VersionPolicy,
    present: list[int],
    served: tuple[int, ...],
    failed: Mapping[int, str],
    previous: Mapping[str, int],
    failures: dict[str, str],
) -> dict[str, int]:
    """Labels naming served versions; each other one is a failure, kept where it was if it can."""
    labels: dict[str, int] = {}
    for label, number in sorted(policy.labels.items()):
        if number in served:
            labels[label] = number
            continue
        if number not in present:
            why = "there is no such version folder"
        elif number in failed:
            why = f"it is held back ({failed[number]})"
        else:
            why = f"versions = {policy.versions.describe()} does not serve it"
        reason = f"label {label} = {number}: version {number} is not served: {why}"
        kept = previous.get(label)
        if kept is not None and kept in served:
            labels[label] = kept
            reason += f"; {label} still names version {kept}"
        elif label == DEFAULT_LABEL and served:
            reason += f"; unpinned requests get version {served[-1]}, the highest served"
        failures[f"{name}@{label}"] = reason
    return labels


def _nothing_served(policy: VersionPolicy, present: list[int], failed: Mapping[int, str]) -> str:
    if not present:
        return "no version to serve: no numbered version folder <N>/"
    held = f"; held back: {', '.join(map(str, sorted(failed)))}" if failed else ""
    return (
        f"no version to serve: versions = {policy.versions.describe()} over the version "
        f"folders {', '.join(map(str, present))}{held}"
    )


@dataclass(frozen=True)
class VersionChanges:
    """How the versions of one table or group changed between two polls (by identity)."""

    appeared: tuple[int, ...]
    disappeared: tuple[int, ...]
    changed: tuple[int, ...]  # present both times, with another identity

    def __bool__(self) -> bool:
        return bool(self.appeared or self.disappeared or self.changed)


def version_changes(before: Mapping[int, str], after: Mapping[int, str]) -> VersionChanges:
    """Compare two ``identities`` maps (version number -> identity) of one table or group."""
    return VersionChanges(
        appeared=tuple(sorted(set(after) - set(before))),
        disappeared=tuple(sorted(set(before) - set(after))),
        changed=tuple(sorted(n for n in set(before) & set(after) if before[n] != after[n])),
    )


@dataclass
class HeldBack:
    """Versions of one table or group that failed to load, each at the identity it had.

    A failure holds while the version's files stay the same; once its identity changes (the
    operator fixed or replaced it) it is forgotten and the version is tried again.
    """

    entries: dict[int, tuple[str, str]] = field(default_factory=dict)  # n -> (identity, reason)

    def note(self, number: int, identity: str, reason: str) -> None:
        """Record that version ``number``, at ``identity``, failed to load for ``reason``."""
        self.entries[number] = (identity, reason)

    def reasons(self, identities: Mapping[int, str]) -> dict[int, str]:
        """The failures that still hold for the versions now present (``identities``)."""
        self.entries = {
            number: entry
            for number, entry in self.entries.items()
            if identities.get(number) == entry[0]
        }
        return {number: reason for number, (_, reason) in self.entries.items()}
