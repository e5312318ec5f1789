"""Read-only questions the web view (``mirrorsync serve``) asks, each one bounded.

Every answer here is either a fixed number of rows (a page, a limit) or one
aggregate pass through an index: a page never loads a stack's memberships
into memory. The history of a stack's bytes is one grouped pass over its
memberships (``bytes_history``): each stay ``[entered, left)`` adds its spec's
size at ``entered`` and takes it away at ``left``, so a running sum over the
versions gives every version's bytes at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mirrorsync.formats.index import SpecInfo
from mirrorsync.store.db import Store
from mirrorsync.store.eventlog import (
    EVENT_COLUMNS,
    EVENT_JOINS,
    Event,
    EventFilter,
    event_source,
    newest_events,
)
from mirrorsync.store.overview import holds_nul
from mirrorsync.store.queries import EFFECTIVE_AT
from mirrorsync.store.specs import SPEC_COLUMNS, spec_from_row


@dataclass(frozen=True, slots=True)
class StackRef:
    """A stack as a page names it: its id and its three names."""

    id: int
    source: str
    release: str
    stack: str
    version: int
    spec_count: int


async def change_token(store: Store) -> int | None:
    """A number that changes whenever another connection commits to the database
    (SQLite's ``data_version``); None where there is none (PostgreSQL)."""
    if store.dialect.postgresql:
        return None
    async with store.conn.execute("PRAGMA data_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else None


async def find_stack(store: Store, source: str, release: str, stack: str) -> StackRef | None:
    """The stack named exactly so (no globs: names from a URL are taken literally)."""
    if holds_nul(source, release, stack):
        return None
    async with store.conn.execute(
        "SELECT st.id, src.name, st.release, st.name, st.version, st.spec_count"
        " FROM stacks st JOIN sources src ON src.id = st.source_id"
        " WHERE src.name = ? AND st.release = ? AND st.name = ?",
        (source, release, stack),
    ) as cursor:
        row = await cursor.fetchone()
    return StackRef(*row) if row else None


@dataclass(frozen=True, slots=True)
class StackFigures:
    """What the overview shows of a stack beyond its status row."""

    bytes: int  # of its current specs whose size is known
    sized: int  # how many of them have a known size
    added: int  # by its current version
    removed: int


async def stack_figures(store: Store) -> dict[tuple[str, str, str], StackFigures]:
    """(source, release, stack) -> its figures: one grouped pass over the current
    memberships (their partial index) joined to the manifests' sizes."""
    async with store.conn.execute(
        "SELECT src.name, st.release, st.name, coalesce(b.bytes, 0), coalesce(b.sized, 0),"
        " coalesce(v.added, 0), coalesce(v.removed, 0)"
        " FROM stacks st JOIN sources src ON src.id = st.source_id"
        " LEFT JOIN stack_versions v ON v.stack_id = st.id AND v.version = st.version"
        " LEFT JOIN (SELECT m.stack_id, sum(sm.tarball_size) AS bytes,"
        "  count(sm.tarball_size) AS sized FROM memberships m JOIN spec_manifests sm"
        "  ON sm.stack_id = m.stack_id AND sm.spec_id = m.spec_id"
        "  WHERE m.left IS NULL GROUP BY m.stack_id) b ON b.stack_id = st.id"
    ) as cursor:
        return {
            (str(r[0]), str(r[1]), str(r[2])): StackFigures(*(int(x) for x in r[3:]))
            for r in await cursor.fetchall()
        }


@dataclass(frozen=True, slots=True)
class VersionBytes:
    version: int
    bytes: int  # of the specs held at this version whose size is known
    sized: int  # how many of them have a known size


async def bytes_history(store: Store, stack_id: int, latest: int) -> list[VersionBytes]:
    """Every version 1..``latest`` of a stack with the bytes it held: one grouped pass."""
    delta_bytes = [0] * (latest + 2)
    delta_sized = [0] * (latest + 2)
    # From the sized specs (the stack's manifests, in their key's order) to their
    # stays (a lookup each): a spec without a size adds nothing to the bytes.
    async with store.conn.execute(
        "SELECT m.entered, m.left, coalesce(sum(sm.tarball_size), 0), count(sm.tarball_size)"
        f" FROM spec_manifests sm {store.dialect.ordered_join} memberships m"
        " ON m.stack_id = sm.stack_id AND m.spec_id = sm.spec_id"
        " WHERE sm.stack_id = ? GROUP BY m.entered, m.left",
        (stack_id,),
    ) as cursor:
        for entered, left, size, sized in await cursor.fetchall():
            start = min(int(entered), latest + 1)
            end = latest + 1 if left is None else min(int(left), latest + 1)
            delta_bytes[start] += int(size)
            delta_sized[start] += int(sized)
            delta_bytes[end] -= int(size)
            delta_sized[end] -= int(sized)
    out: list[VersionBytes] = []
    total = sized_total = 0
    for version in range(1, latest + 1):
        total += delta_bytes[version]
        sized_total += delta_sized[version]
        out.append(VersionBytes(version, total, sized_total))
    return out


@dataclass(frozen=True, slots=True)
class SizedSpec:
    spec: SpecInfo
    size: int | None  # bytes of its binary, if its manifest was read


@dataclass(frozen=True, slots=True)
class DiffPage:
    from_version: int
    to_version: int
    added: list[SizedSpec]  # at most the limit asked, by name, version, hash
    removed: list[SizedSpec]
    added_count: int
    removed_count: int


def _only_at(x: str, y: str, later: bool) -> str:
    """Spec ids the stack held at version ``x`` and not at ``y``: the stays that
    hold ``x`` and began after ``y`` (``later``: x > y) or ended by ``y`` (x < y),
    less the specs that also held ``y`` in another stay (left and came back). One
    pass over the stack's stays, each check a primary-key lookup: no set of
    100,000 members is built for either version."""
    bound = f"m.entered > {y}" if later else f"m.left IS NOT NULL AND m.left <= {y}"
    return (
        "SELECT m.spec_id FROM memberships m WHERE m.stack_id = :stack"
        f" AND m.entered <= {x} AND (m.left IS NULL OR m.left > {x}) AND {bound}"
        " AND NOT EXISTS (SELECT 1 FROM memberships o WHERE o.stack_id = :stack"
        f" AND o.spec_id = m.spec_id AND o.entered <= {y} AND (o.left IS NULL OR o.left > {y}))"
    )


async def diff_page(
    store: Store, stack_id: int, from_version: int, to_version: int, *, limit: int
) -> DiffPage:
    """Specs held at ``to_version`` and not ``from_version`` (added), and the reverse:
    the counts, and the first ``limit`` of each (by name, version, hash)."""
    params = {"stack": stack_id, "a": from_version, "b": to_version, "n": limit}

    async def only_in(x: str, y: str, later: bool) -> tuple[list[SizedSpec], int]:
        # The stays first, then their specs: only the answer is sorted; the count
        # of all of them comes with the first rows (a window over the whole answer).
        async with store.conn.execute(
            f"SELECT {SPEC_COLUMNS}, sm.tarball_size, count(*) OVER ()"
            f" FROM ({_only_at(x, y, later)}) d {store.dialect.ordered_join} specs s"
            " ON s.id = d.spec_id"
            " LEFT JOIN spec_manifests sm ON sm.stack_id = :stack AND sm.spec_id = s.id"
            " ORDER BY s.name, s.version, s.hash LIMIT :n",
            params,
        ) as cursor:
            rows = list(await cursor.fetchall())
        count = int(rows[0][9]) if rows else 0
        return [SizedSpec(spec_from_row(r[:8]), r[8]) for r in rows], count

    if from_version == to_version:
        return DiffPage(from_version, to_version, [], [], 0, 0)
    forward = to_version > from_version
    added, n_added = await only_in(":b", ":a", forward)
    removed, n_removed = await only_in(":a", ":b", not forward)
    return DiffPage(from_version, to_version, added, removed, n_added, n_removed)


@dataclass(frozen=True, slots=True)
class PackageSpec:
    """One stay of one spec of a package in one stack."""

    spec: SpecInfo
    source: str
    release: str
    stack: str
    size: int | None
    entered_version: int
    entered_at: str | None
    left_version: int | None
    left_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """The spec as ``diff --json`` gives it, with where and when it stayed."""
        return {
            **asdict(self.spec),
            "source": self.source,
            "release": self.release,
            "stack": self.stack,
            "tarball_size": self.size,
            "entered_version": self.entered_version,
            "entered_at": self.entered_at,
            "left_version": self.left_version,
            "left_at": self.left_at,
            "current": self.left_version is None,
        }


async def package_specs(store: Store, package: str, *, limit: int) -> tuple[list[PackageSpec], int]:
    """Every stay of every spec named ``package`` (exactly) in any stack, the first
    ``limit`` of them (by version, hash, stack, time), and how many there are."""
    if holds_nul(package):
        return [], 0
    entered_at = EFFECTIVE_AT.format(stack="m.stack_id", v="m.entered")
    left_at = EFFECTIVE_AT.format(stack="m.stack_id", v="m.left")
    among = store.dialect.memberships_among("m", "SELECT id FROM specs WHERE name = ?")
    joins = (
        " FROM specs s JOIN m ON m.spec_id = s.id"
        " JOIN stacks st ON st.id = m.stack_id JOIN sources src ON src.id = st.source_id"
    )
    async with store.conn.execute(
        f"WITH {among} SELECT count(*){joins} WHERE s.name = ?", (package, package)
    ) as c:
        row = await c.fetchone()
    total = int(row[0]) if row else 0
    async with store.conn.execute(
        f"WITH {among} SELECT {SPEC_COLUMNS}, src.name, st.release, st.name, sm.tarball_size,"
        f" m.entered, {entered_at}, m.left, CASE WHEN m.left IS NULL THEN NULL ELSE {left_at} END"
        f"{joins} LEFT JOIN spec_manifests sm ON sm.stack_id = m.stack_id AND sm.spec_id = s.id"
        " WHERE s.name = ?"
        " ORDER BY s.version DESC, s.hash, src.name, st.release, st.name, m.entered LIMIT ?",
        (package, package, limit),
    ) as cursor:
        rows = await cursor.fetchall()
    return [PackageSpec(spec_from_row(r[:8]), *r[8:]) for r in rows], total


def _prefix_end(prefix: str) -> str:
    """The least string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(min(ord(prefix[-1]) + 1, 0x10FFFF))


async def package_names(store: Store, prefix: str, *, limit: int) -> list[tuple[str, int]]:
    """Package names starting with ``prefix`` (a range on the names' index), at most
    ``limit``, each with how many specs of it the database holds."""
    if holds_nul(prefix):
        return []
    if not prefix:
        sql, params = "SELECT name, count(*) FROM specs", []
    else:
        sql, params = (
            "SELECT name, count(*) FROM specs WHERE name >= ? AND name < ?",
            [
                prefix,
                _prefix_end(prefix),
            ],
        )
    async with store.conn.execute(
        f"{sql} GROUP BY name ORDER BY name LIMIT ?", [*params, limit]
    ) as cursor:
        rows = await cursor.fetchall()
    return [(str(r[0]), int(r[1])) for r in rows if str(r[0]).startswith(prefix)]


async def events_page(
    store: Store, where: EventFilter, *, before: int | None, limit: int
) -> list[Event]:
    """Newest first: up to ``limit`` events with ids below ``before`` (None: the newest)
    matching ``where`` (``eventlog.newest_events``)."""
    return await newest_events(store, where, before=before, limit=limit)


async def event(store: Store, event_id: int) -> Event | None:
    """One event by id: only the stored row or span holding it is expanded."""
    async with store.conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM {event_source('?', '?')} e {EVENT_JOINS} WHERE e.id = ?",
        (event_id - 1, event_id, event_id - 1, event_id, event_id),
    ) as cursor:
        row = await cursor.fetchone()
    return Event(*row) if row else None
