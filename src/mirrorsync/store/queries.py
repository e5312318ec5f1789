"""Read-only questions about the history: status, versions, diffs, points in time, events."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mirrorsync.errors import UsageError
from mirrorsync.formats.index import SpecInfo
from mirrorsync.store.db import Store

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]00:?00)?$")


@dataclass(frozen=True, slots=True)
class StackStatus:
    source: str
    release: str
    stack: str
    present: bool
    version: int
    spec_count: int
    layout: str | None
    last_checked: str | None
    last_changed: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class VersionRow:
    version: int
    created_at: str
    spec_count: int
    added: int
    removed: int
    index_checksum: str | None


@dataclass(frozen=True, slots=True)
class Diff:
    from_version: int
    to_version: int
    added: list[SpecInfo]
    removed: list[SpecInfo]


@dataclass(frozen=True, slots=True)
class Interval:
    source: str
    release: str
    stack: str
    entered_version: int
    entered_at: str
    left_version: int | None
    left_at: str | None


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    source: str
    release: str
    stack: str | None
    hash: str | None
    name: str | None
    version: str | None
    stack_version: int | None
    occurred_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "release": self.release,
            "stack": self.stack,
            "hash": self.hash,
            "name": self.name,
            "version": self.version,
            "stack_version": self.stack_version,
            "occurred_at": self.occurred_at,
        }


SPEC_COLUMNS = "s.hash, s.name, s.version, s.platform, s.os, s.target, s.compiler, s.variants"
#: The columns of an ``Event``, in order, from events ``e`` joined by ``EVENT_JOINS``.
EVENT_COLUMNS = (
    "e.id, e.type, src.name, e.release, st.name, s.hash, s.name, s.version,"
    " e.stack_version, e.occurred_at"
)
EVENT_JOINS = (
    "JOIN sources src ON src.id = e.source_id"
    " LEFT JOIN stacks st ON st.id = e.stack_id LEFT JOIN specs s ON s.id = e.spec_id"
)


def spec_from_row(row: Any) -> SpecInfo:
    """A SpecInfo from the eight columns of ``SPEC_COLUMNS``, in that order."""
    hash_, name, version, platform, os, target, compiler, variants = row
    return SpecInfo(
        hash_, name, version, platform, os, target, compiler, tuple(json.loads(variants))
    )


async def status(store: Store) -> list[StackStatus]:
    async with store.conn.execute(
        "SELECT src.name, st.release, st.name, st.present, st.version, st.spec_count, st.layout,"
        " st.last_checked, st.last_changed, st.last_error"
        " FROM stacks st JOIN sources src ON src.id = st.source_id"
        " ORDER BY src.name, st.release, st.name"
    ) as cursor:
        return [StackStatus(r[0], r[1], r[2], bool(r[3]), *r[4:]) for r in await cursor.fetchall()]


async def find_stack(store: Store, release: str, stack: str, source: str | None = None) -> int:
    """The id of (source, release, stack); UsageError if unknown or ambiguous."""
    sql = (
        "SELECT st.id, src.name FROM stacks st JOIN sources src ON src.id = st.source_id"
        " WHERE st.release = ? AND st.name = ?"
    )
    params: list[object] = [release, stack]
    if source:
        sql += " AND src.name = ?"
        params.append(source)
    async with store.conn.execute(sql, params) as cursor:
        rows = list(await cursor.fetchall())
    where = f"{source + ':' if source else ''}{release}/{stack}"
    if not rows:
        raise UsageError(f"no stack {where} in {store.path}")
    if len(rows) > 1:
        names = ", ".join(sorted(r[1] for r in rows))
        raise UsageError(f"{where} exists in several sources ({names}); pass --source")
    return int(rows[0][0])


async def history(store: Store, stack_id: int) -> list[VersionRow]:
    async with store.conn.execute(
        "SELECT version, created_at, spec_count, added, removed, index_checksum"
        " FROM stack_versions WHERE stack_id = ? ORDER BY version",
        (stack_id,),
    ) as cursor:
        return [VersionRow(*r) for r in await cursor.fetchall()]


async def resolve_version(store: Store, stack_id: int, when: str) -> int:
    """A version number, or the version current at an ISO date/time (0 = before the first).

    A bare date (``2026-11-01``) means the end of that day, UTC. A version's time
    is the latest recorded for it or any earlier version (see ``EFFECTIVE_AT``).
    """
    async with store.conn.execute(
        "SELECT coalesce(max(version), 0) FROM stack_versions WHERE stack_id = ?", (stack_id,)
    ) as cursor:
        row = await cursor.fetchone()
    latest = int(row[0]) if row else 0
    if when.isdigit():
        version = int(when)
        if version > latest:
            raise UsageError(f"version {version} does not exist (latest is {latest})")
        return version
    if _DATE_RE.match(when):
        instant = f"{when}T23:59:59.999999Z"
    elif _DATETIME_RE.match(when):
        instant = _normalise_instant(when)
    else:
        raise UsageError(f"{when!r} is neither a version number nor an ISO date (YYYY-MM-DD)")
    # Versions are ordered by number, whatever the clock said: a version counts from
    # the latest time recorded for it or any version before it (the clock may have
    # been set back between runs), so the answer is the version before the first
    # one recorded after the instant, never one older than a version already then.
    async with store.conn.execute(
        "SELECT min(version) FROM stack_versions WHERE stack_id = ? AND created_at > ?",
        (stack_id, instant),
    ) as cursor:
        row = await cursor.fetchone()
    return latest if row is None or row[0] is None else int(row[0]) - 1


def _normalise_instant(text: str) -> str:
    text = text.replace(" ", "T").rstrip("Z")
    for suffix in ("+00:00", "+0000", "-00:00", "-0000"):
        text = text.removesuffix(suffix)
    date, _, clock = text.partition("T")
    parts = clock.split(":")
    while len(parts) < 3:
        parts.append("00")
    seconds, _, fraction = parts[2].partition(".")
    return f"{date}T{parts[0]}:{parts[1]}:{seconds}.{fraction.ljust(6, '0')}Z"


_AT_VERSION = "m.entered <= :v AND (m.left IS NULL OR m.left > :v)"


async def members_at(store: Store, stack_id: int, version: int) -> list[SpecInfo]:
    """Every spec the stack held at ``version``, by hash."""
    async with store.conn.execute(
        f"SELECT {SPEC_COLUMNS} FROM memberships m JOIN specs s ON s.id = m.spec_id"
        f" WHERE m.stack_id = :stack AND {_AT_VERSION} ORDER BY s.hash",
        {"stack": stack_id, "v": version},
    ) as cursor:
        return [spec_from_row(r) for r in await cursor.fetchall()]


async def diff(store: Store, stack_id: int, from_version: int, to_version: int) -> Diff:
    """Specs held at ``to_version`` but not ``from_version`` (added), and the reverse."""

    async def only_in(a: int, b: int) -> list[SpecInfo]:
        async with store.conn.execute(
            f"SELECT {SPEC_COLUMNS} FROM specs s WHERE s.id IN ("
            " SELECT m.spec_id FROM memberships m WHERE m.stack_id = :stack"
            " AND m.entered <= :a AND (m.left IS NULL OR m.left > :a)"
            " EXCEPT SELECT m.spec_id FROM memberships m WHERE m.stack_id = :stack"
            " AND m.entered <= :b AND (m.left IS NULL OR m.left > :b))"
            " ORDER BY s.name, s.version, s.hash",
            {"stack": stack_id, "a": a, "b": b},
        ) as cursor:
            return [spec_from_row(r) for r in await cursor.fetchall()]

    return Diff(
        from_version,
        to_version,
        added=await only_in(to_version, from_version),
        removed=await only_in(from_version, to_version),
    )


async def spec(store: Store, spec_hash: str) -> SpecInfo | None:
    async with store.conn.execute(
        f"SELECT {SPEC_COLUMNS} FROM specs s WHERE s.hash = ?", (spec_hash,)
    ) as cursor:
        row = await cursor.fetchone()
    return spec_from_row(row) if row else None


#: When stack version ``{v}`` of stack ``{stack}`` counts from: the latest time recorded
#: for it or any version before it, so times never run against version order.
EFFECTIVE_AT = (
    "(SELECT max(v.created_at) FROM stack_versions v"
    " WHERE v.stack_id = {stack} AND v.version <= {v})"
)


async def intervals(store: Store, spec_hash: str) -> list[Interval]:
    """Every stay of a spec in any stack: when it came and when it went."""
    entered_at = EFFECTIVE_AT.format(stack="m.stack_id", v="m.entered")
    left_at = EFFECTIVE_AT.format(stack="m.stack_id", v="m.left")
    async with store.conn.execute(
        f"SELECT src.name, st.release, st.name, m.entered, {entered_at}, m.left,"
        f" CASE WHEN m.left IS NULL THEN NULL ELSE {left_at} END"
        " FROM specs s JOIN memberships m ON m.spec_id = s.id"
        " JOIN stacks st ON st.id = m.stack_id JOIN sources src ON src.id = st.source_id"
        " WHERE s.hash = ? ORDER BY src.name, st.release, st.name, m.entered",
        (spec_hash,),
    ) as cursor:
        return [Interval(*r) for r in await cursor.fetchall()]


async def last_event_id(store: Store) -> int:
    async with store.conn.execute("SELECT coalesce(max(id), 0) FROM events") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def events(
    store: Store,
    *,
    since: int = 0,
    types: list[str] | None = None,
    limit: int | None = None,
) -> AsyncIterator[Event]:
    """Events with id > ``since`` in id order, streamed."""
    sql = f"SELECT {EVENT_COLUMNS} FROM events e {EVENT_JOINS} WHERE e.id > ?"
    params: list[object] = [since]
    if types:
        sql += f" AND e.type IN ({', '.join('?' for _ in types)})"
        params.extend(types)
    sql += " ORDER BY e.id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    async with store.conn.execute(sql, params) as cursor:
        while rows := await cursor.fetchmany(1000):
            for r in rows:
                yield Event(*r)


async def event_counts(store: Store) -> dict[str, int]:
    """How many events of each type the database holds, all time."""
    async with store.conn.execute("SELECT type, count(*) FROM events GROUP BY type") as cursor:
        return {str(r[0]): int(r[1]) for r in await cursor.fetchall()}
