"""Read-only questions about the history: status, versions, diffs, points in time, events."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, date, datetime, time, timedelta

from mirrorsync.errors import UsageError
from mirrorsync.records import record
from mirrorsync.store.db import Store
from mirrorsync.store.overview import StackStatus as StackStatus
from mirrorsync.store.overview import distinct_specs as distinct_specs
from mirrorsync.store.overview import holding_row as holding_row
from mirrorsync.store.overview import holds_nul as holds_nul
from mirrorsync.store.overview import name_filter as name_filter
from mirrorsync.store.overview import sql_glob as sql_glob
from mirrorsync.store.overview import status as status

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any

    from mirrorsync.formats.index import SpecInfo

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}([.,]\d{1,6})?)?([Zz]|[+-]\d{2}(:?\d{2})?)?$"
)


@record(frozen=True, slots=True)
class VersionRow:
    version: int
    created_at: str
    spec_count: int
    added: int
    removed: int
    index_checksum: str | None


@record(frozen=True, slots=True)
class Diff:
    from_version: int
    to_version: int
    added: list[SpecInfo]
    removed: list[SpecInfo]


@record(frozen=True, slots=True)
class Interval:
    source: str
    release: str
    stack: str
    entered_version: int
    entered_at: str
    left_version: int | None
    left_at: str | None


@record(frozen=True, slots=True)
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
    # mirror.updated: the copy and its published state's counts (None for other events)
    mirror: str | None = None
    binaries: int | None = None
    bytes: int | None = None
    added: int | None = None
    removed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        mirror: dict[str, Any] = {}
        if self.mirror is not None:
            mirror["mirror"] = {
                "name": self.mirror,
                "binaries": self.binaries,
                "bytes": self.bytes,
                "added": self.added,
                "removed": self.removed,
            }
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
            **mirror,
        }


SPEC_COLUMNS = "s.hash, s.name, s.version, s.platform, s.os, s.target, s.compiler, s.variants"
#: The columns of an ``Event``, in order, from events ``e`` joined by ``EVENT_JOINS``.
EVENT_COLUMNS = (
    "e.id, e.type, src.name, e.release, st.name, s.hash, s.name, s.version,"
    " e.stack_version, e.occurred_at, mi.name, mv.binaries, mv.bytes, mv.added, mv.removed"
)
#: The last event id handed out: the newest stored row's, or its span's last.
LAST_EVENT_ID = (
    "SELECT coalesce((SELECT id + coalesce(span, 1) - 1 FROM event_rows"
    " ORDER BY id DESC LIMIT 1), 0)"
)


def event_source(after: str, upto: str | None = None) -> str:
    """A subquery of the events (the columns of the view ``events``, one row per
    event) of the stored rows and spans holding ids above ``after`` (and up to
    ``upto``): SQL expressions, typically placeholders, each used twice (``after``,
    ``upto``, ``after``, ``upto``). Only those spans are expanded, so a bounded
    read costs what it reads, not the whole history; callers still filter the
    ids themselves (a span is expanded whole)."""
    upper = f" AND id <= {upto}" if upto is not None else ""
    upper_span = f" AND r.id <= {upto}" if upto is not None else ""
    return (
        "(SELECT id, type, source_id, release, stack_id, spec_id, stack_version, occurred_at"
        f" FROM event_rows WHERE span IS NULL AND id > {after}{upper}"
        " UNION ALL"
        " SELECT r.id - 1 + row_number() OVER (PARTITION BY r.id ORDER BY s.hash) AS id,"
        " r.type, r.source_id, r.release, r.stack_id, m.spec_id, r.stack_version,"
        " r.occurred_at"
        " FROM event_rows r JOIN memberships m ON m.stack_id = r.stack_id"
        " AND ((r.type = 'spec.added' AND m.entered = r.stack_version)"
        " OR (r.type = 'spec.removed' AND m.left = r.stack_version))"
        " JOIN specs s ON s.id = m.spec_id"
        f" WHERE r.span IS NOT NULL AND r.id + r.span - 1 > {after}{upper_span})"
    )


EVENT_JOINS = (
    "JOIN sources src ON src.id = e.source_id"
    " LEFT JOIN stacks st ON st.id = e.stack_id LEFT JOIN specs s ON s.id = e.spec_id"
    " LEFT JOIN mirror_versions mv ON mv.event_id = e.id"
    " LEFT JOIN mirrors mi ON mi.id = mv.mirror_id"
)


def spec_from_row(row: Any) -> SpecInfo:
    """A SpecInfo from the eight columns of ``SPEC_COLUMNS``, in that order."""
    import json  # not for status either (start-up)

    from mirrorsync.formats.index import SpecInfo  # not for status: its msgspec structs

    hash_, name, version, platform, os, target, compiler, variants = row
    return SpecInfo(
        hash_, name, version, platform, os, target, compiler, tuple(json.loads(variants))
    )


async def stack_labels(store: Store) -> list[str]:
    """``source:release/stack`` of every stack the database knows (the events table's
    stack column, sized to them before the first event is streamed)."""
    async with store.conn.execute(
        "SELECT src.name, st.release, st.name FROM stacks st JOIN sources src"
        " ON src.id = st.source_id"
    ) as cursor:
        return [f"{r[0]}:{r[1]}/{r[2]}" for r in await cursor.fetchall()]


async def find_stack(store: Store, release: str, stack: str, source: str | None = None) -> int:
    """The id of (source, release, stack), each a name or a glob; UsageError if no
    stack matches, or several do (naming them)."""
    sql = (
        "SELECT st.id, src.name, st.release, st.name FROM stacks st"
        " JOIN sources src ON src.id = st.source_id WHERE 1 = 1"
    )
    params: list[object] = []
    for column, value in (
        ("st.release", release),
        ("st.name", stack),
        ("src.name", source or None),
    ):
        if value is not None:
            condition, param = name_filter(store, column, value)
            sql += f" AND {condition}"
            params.append(param)
    async with store.conn.execute(sql + " ORDER BY src.name, st.release, st.name", params) as c:
        rows = list(await c.fetchall())
    where = f"{source + ':' if source else ''}{release}/{stack}"
    if not rows:
        raise UsageError(f"no stack {where} in {store.path}")
    if len(rows) > 1 and len({(r[2], r[3]) for r in rows}) == 1:
        names = ", ".join(sorted(r[1] for r in rows))
        raise UsageError(f"{where} exists in several sources ({names}); pass --source")
    if len(rows) > 1:
        names = ", ".join(f"{r[1]}:{r[2]}/{r[3]}" for r in rows[:10])
        more = " and more" if len(rows) > 10 else ""
        raise UsageError(f"{where} matches several stacks ({names}{more}); name one")
    return int(rows[0][0])


async def stack_label(store: Store, stack_id: int) -> str:
    """``release/stack`` of a stack, as titles print it."""
    async with store.conn.execute(
        "SELECT release, name FROM stacks WHERE id = ?", (stack_id,)
    ) as cursor:
        row = await cursor.fetchone()
    return f"{row[0]}/{row[1]}" if row else "?"


#: The names a query filter may match, by option: (noun, SQL of the known names).
_KNOWN_NAMES = {
    "source": ("source", "SELECT name AS n FROM sources"),
    "release": ("release", "SELECT release AS n FROM stacks"),
    "stack": ("stack", "SELECT name AS n FROM stacks"),
    "package": ("package", "SELECT name AS n FROM specs"),
}


async def require_match(store: Store, option: str, glob: str | None) -> None:
    """UsageError naming ``--option GLOB`` if the name or glob matches nothing known.

    ``option`` is one of source, release, stack, package; None: no filter, nothing to check.
    """
    if glob is None:
        return
    noun, names = _KNOWN_NAMES[option]
    condition, param = name_filter(store, "k.n", glob)
    async with store.conn.execute(
        f"SELECT 1 FROM ({names}) k WHERE {condition} LIMIT 1", (param,)
    ) as cursor:
        found = await cursor.fetchone()
    if found is None:
        raise UsageError(f"--{option} {glob} matches no {noun} in the database")


async def first_version_at(store: Store, stack_id: int) -> str | None:
    """When a stack's history begins: the time of its first version (None: no version)."""
    async with store.conn.execute(
        "SELECT min(created_at) FROM stack_versions WHERE stack_id = ?", (stack_id,)
    ) as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row and row[0] is not None else None


async def history(store: Store, stack_id: int) -> list[VersionRow]:
    return [row async for row in history_rows(store, stack_id)]


async def history_rows(
    store: Store, stack_id: int, *, limit: int | None = None
) -> AsyncGenerator[VersionRow, None]:
    """A stack's versions in order, streamed; with ``limit``, only the newest ``limit``."""
    sql = (
        "SELECT version, created_at, spec_count, added, removed, index_checksum"
        " FROM stack_versions WHERE stack_id = ?"
    )
    params: list[object] = [stack_id]
    if limit is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY version DESC LIMIT ?)"
        params.append(limit)
    # Streams read a page of rows at a time (memory does not grow with the result),
    # directly in the generator, so closing it early closes the cursor at once.
    async with store.conn.execute(f"{sql} ORDER BY version", params) as cursor:
        while rows := await cursor.fetchmany(_PAGE):
            for r in rows:
                yield VersionRow(*r)


_PAGE = 500


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
    if is_version(when):
        version = int(when.removeprefix("v"))
        if version > latest:
            raise UsageError(f"version {version} does not exist (latest is {latest})")
        return version
    moment = instant(when)
    # Versions are ordered by number, whatever the clock said: a version counts from
    # the latest time recorded for it or any version before it (the clock may have
    # been set back between runs), so the answer is the version before the first
    # one recorded after the instant, never one older than a version already then.
    async with store.conn.execute(
        "SELECT min(version) FROM stack_versions WHERE stack_id = ? AND created_at > ?",
        (stack_id, moment),
    ) as cursor:
        row = await cursor.fetchone()
    return latest if row is None or row[0] is None else int(row[0]) - 1


def is_version(text: str) -> bool:
    """A version number as the command line takes it: ``3`` or ``v3`` (as printed)."""
    digits = text.removeprefix("v")
    return digits.isascii() and digits.isdigit()


_RELATIVE_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhd])(?:\s+ago)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _relative(text: str, now: datetime | None) -> str | None:
    """``today``/``yesterday`` as a bare UTC date; ``2h``/``3d`` (the duration syntax,
    with a unit) as that long before now, to the second; None for anything else."""
    now = now or datetime.now(UTC)
    lowered = text.lower()
    if lowered in ("today", "yesterday"):
        day = now.date() - timedelta(days=1 if lowered == "yesterday" else 0)
        return day.isoformat()
    match = _RELATIVE_RE.match(lowered)
    if match is None:
        return None
    seconds = float(match["n"]) * _UNITS[match["unit"]]
    try:
        moment = now - timedelta(seconds=seconds)
    except OverflowError:
        return "0001-01-01T00:00:00Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment.year >= 1000 else "0001-01-01T00:00:00Z"


def instant(text: str, *, end_of_day: bool = True, now: datetime | None = None) -> str:
    """An ISO 8601 date or date and time, as a stored UTC timestamp; UsageError if not one.

    ``2026-11-20`` is the end of that day UTC (its start with ``end_of_day=False``);
    a time without an offset is UTC; ``Z``, ``+02:00`` and ``-0500`` are honoured.
    Impossible dates (``2026-13-45``) are refused. Relative times: ``today`` and
    ``yesterday`` are that UTC date; ``2h``, ``30m``, ``3d`` (the duration syntax with
    its unit) that long before ``now``.
    """
    original = text = text.strip()
    text = _relative(text, now) or text
    if not _DATE_RE.match(text) and not _DATETIME_RE.match(text):
        raise UsageError(
            f"{original!r} is not an ISO 8601 date or time or a relative one"
            " (e.g. 2026-11-20, 2026-11-20T08:00Z, 2026-11-20T20:16:00-05:00, 2h, 3d, yesterday)"
        )
    try:
        if _DATE_RE.match(text):
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.max if end_of_day else time.min, UTC)
        else:
            moment = datetime.fromisoformat(text.replace(" ", "T", 1))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except ValueError:
        raise UsageError(f"{text!r} is not a real date or time") from None
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise UsageError(f"{text!r} is outside the years 1 to 9999 in UTC") from None
    # %Y is not zero-padded on every C library: year 1 must read 0001 to sort as text.
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.%fZ")


_AT_VERSION = "m.entered <= :v AND (m.left IS NULL OR m.left > :v)"


async def members_at(store: Store, stack_id: int, version: int) -> list[SpecInfo]:
    """Every spec the stack held at ``version``, by hash."""
    return [s async for s in stream_members_at(store, stack_id, version)]


async def stream_members_at(
    store: Store, stack_id: int, version: int
) -> AsyncGenerator[SpecInfo, None]:
    """Every spec the stack held at ``version``, by hash, streamed."""
    # CROSS JOIN: walk specs in hash order (its index), so SQLite never sorts the
    # whole result in memory; each spec's stay in the stack is an index lookup.
    async with store.conn.execute(
        f"SELECT {SPEC_COLUMNS} FROM specs s {store.dialect.ordered_join} memberships m"
        f" ON s.id = m.spec_id WHERE m.stack_id = :stack AND {_AT_VERSION} ORDER BY s.hash",
        {"stack": stack_id, "v": version},
    ) as cursor:
        while rows := await cursor.fetchmany(_PAGE):
            for r in rows:
                yield spec_from_row(r)


async def count_at(store: Store, stack_id: int, version: int) -> int:
    """How many specs the stack held at ``version``."""
    async with store.conn.execute(
        f"SELECT count(*) FROM memberships m WHERE m.stack_id = :stack AND {_AT_VERSION}",
        {"stack": stack_id, "v": version},
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


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
    table, held = store.dialect.memberships_of("s.id")
    async with store.conn.execute(
        f"SELECT src.name, st.release, st.name, m.entered, {entered_at}, m.left,"
        f" CASE WHEN m.left IS NULL THEN NULL ELSE {left_at} END"
        f" FROM specs s JOIN {table} m ON {held}"
        " JOIN stacks st ON st.id = m.stack_id JOIN sources src ON src.id = st.source_id"
        " WHERE s.hash = ? ORDER BY src.name, st.release, st.name, m.entered",
        (spec_hash,),
    ) as cursor:
        return [Interval(*r) for r in await cursor.fetchall()]


async def last_event_id(store: Store) -> int:
    async with store.conn.execute(LAST_EVENT_ID) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


@record(frozen=True, slots=True)
class EventFilter:
    """Which events to read: every given condition must hold."""

    since: int = 0  # ids above this
    since_at: str | None = None  # occurred at or after (stored UTC timestamp)
    until_at: str | None = None  # occurred at or before
    types: Sequence[str] = ()
    source: str | None = None
    release: str | None = None
    stack: str | None = None
    package: str | None = None  # the spec's name
    limit: int | None = None
    newest_first: bool = False


def event_conditions(store: Store, f: EventFilter) -> tuple[str, list[object]]:
    """The ``AND ...`` clauses and their parameters of ``f``'s types, names (globs)
    and times, over ``EVENT_COLUMNS``/``EVENT_JOINS`` (alias ``e``): one filter for
    ``events`` and the web view's pages."""
    sql = ""
    params: list[object] = []
    if f.types:
        sql += f" AND e.type IN ({', '.join('?' for _ in f.types)})"
        params.extend(f.types)
    for column, value in (
        ("src.name", f.source),
        ("e.release", f.release),
        ("st.name", f.stack),
        ("s.name", f.package),
    ):
        if value is not None:
            condition, param = name_filter(store, column, value)
            sql += f" AND {condition}"
            params.append(param)
    if f.since_at is not None:
        sql += " AND e.occurred_at >= ?"
        params.append(f.since_at)
    if f.until_at is not None:
        sql += " AND e.occurred_at <= ?"
        params.append(f.until_at)
    return sql, params


async def newest_events(
    store: Store, where: EventFilter, *, before: int | None, limit: int
) -> list[Event]:
    """Newest first: up to ``limit`` events with ids below ``before`` (None: the newest)
    matching ``where`` (its ``limit`` and order are not used).

    A stack version's spec events are stored as one span (``event_rows.span``), so
    reading them all to keep the newest few would expand the whole history (4 s for
    120,000 events). Only the newest ``window`` ids below ``before`` are expanded;
    when the filter leaves fewer than ``limit`` there, the window grows fourfold."""
    window = max(limit, 1)
    while True:
        after = max(await _window_start(store, before, window), where.since)
        upto = None if before is None else before - 1
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM {event_source('?', None if upto is None else '?')} e"
            f" {EVENT_JOINS} WHERE e.id > ?"
        )
        params: list[object] = (
            [after, after, after] if upto is None else [after, upto, after, upto, after]
        )
        if upto is not None:
            sql += " AND e.id <= ?"
            params.append(upto)
        conditions, more = event_conditions(store, where)
        sql += conditions + " ORDER BY e.id DESC LIMIT ?"
        params.extend([*more, limit])
        async with store.conn.execute(sql, params) as cursor:
            found = [Event(*r) for r in await cursor.fetchall()]
        if len(found) >= limit or after <= where.since:
            return found
        window *= 4


async def _window_start(store: Store, before: int | None, window: int) -> int:
    """The id above which the ``window`` newest event ids below ``before`` lie (0: all)."""
    sql = "SELECT id, coalesce(span, 1) FROM event_rows"
    params: list[object] = []
    if before is not None:
        sql += " WHERE id < ?"
        params.append(before)
    counted = 0
    async with store.conn.execute(sql + " ORDER BY id DESC", params) as cursor:
        while rows := await cursor.fetchmany(500):
            for first, span in rows:
                last = int(first) + int(span) - 1
                if before is not None:
                    last = min(last, before - 1)
                counted += last - int(first) + 1
                if counted >= window:
                    return int(first) - 1
    return 0


async def events(
    store: Store,
    *,
    since: int = 0,
    types: list[str] | None = None,
    limit: int | None = None,
    where: EventFilter | None = None,
) -> AsyncGenerator[Event, None]:
    """Events with id > ``since`` in id order (or as ``where`` says), streamed."""
    f = where or EventFilter(since=since, types=types or (), limit=limit)
    if f.newest_first and f.limit is not None:  # the newest few: only their spans expanded
        for e in await newest_events(store, f, before=None, limit=f.limit):
            yield e
        return
    sql = f"SELECT {EVENT_COLUMNS} FROM {event_source('?')} e {EVENT_JOINS} WHERE e.id > ?"
    params: list[object] = [f.since, f.since, f.since]
    conditions, more = event_conditions(store, f)
    sql += conditions
    params.extend(more)
    sql += " ORDER BY e.id DESC" if f.newest_first else " ORDER BY e.id"
    if f.limit is not None:
        sql += " LIMIT ?"
        params.append(f.limit)
    async with store.conn.execute(sql, params) as cursor:
        while rows := await cursor.fetchmany(_PAGE):
            for r in rows:
                yield Event(*r)


async def event_counts(store: Store) -> dict[str, int]:
    """How many events of each type the database holds, all time."""
    async with store.conn.execute(
        "SELECT type, sum(coalesce(span, 1)) FROM event_rows GROUP BY type"
    ) as cursor:
        return {str(r[0]): int(r[1]) for r in await cursor.fetchall()}


async def specs_by_prefix(store: Store, prefix: str, *, limit: int = 10) -> list[SpecInfo]:
    """Specs whose hash starts with ``prefix`` (at most ``limit``), by hash."""
    # Hashes are lowercase base32 (a-z, 2-7); '{' sorts after 'z', so this is a range scan.
    async with store.conn.execute(
        f"SELECT {SPEC_COLUMNS} FROM specs s WHERE s.hash >= ? AND s.hash < ?"
        " ORDER BY s.hash LIMIT ?",
        (prefix, prefix + "{", limit),
    ) as cursor:
        return [spec_from_row(r) for r in await cursor.fetchall()]


@record(frozen=True, slots=True)
class SpecRecord:
    """A spec in a stack, with what its manifest said (sizes, checksums, status)."""

    hash: str
    name: str
    version: str
    source: str
    release: str
    stack: str
    manifest_status: str | None  # ok | missing | malformed | bad_signature | error; None: never
    problem: str | None
    tarball_size: int | None
    tarball_checksum: str | None  # "<algorithm>:<hex>"
    spec_checksum: str | None
    fetched_at: str | None
    current: bool  # the stack holds it now

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "release": self.release,
            "stack": self.stack,
            "manifest_status": self.manifest_status,
            "problem": self.problem,
            "tarball_size": self.tarball_size,
            "tarball_checksum": self.tarball_checksum,
            "spec_checksum": self.spec_checksum,
            "fetched_at": self.fetched_at,
            "current": self.current,
        }


_RECORD_COLUMNS = (
    "s.hash, s.name, s.version, src.name, st.release, st.name, sm.status, sm.problem,"
    " sm.tarball_size,"
    " CASE WHEN sm.tarball_checksum IS NULL THEN NULL"
    " ELSE sm.tarball_algorithm || ':' || sm.tarball_checksum END,"
    " CASE WHEN sm.spec_checksum IS NULL THEN NULL"
    " ELSE sm.spec_algorithm || ':' || sm.spec_checksum END,"
    " sm.fetched_at"
)


def _record(r: Any, *, current: bool) -> SpecRecord:
    """A SpecRecord from the twelve columns of ``_RECORD_COLUMNS``."""
    (hash_, name, version, source, release, stack, status, problem, size, tarball, spec, at) = r
    return SpecRecord(
        hash_,
        name,
        version,
        source,
        release,
        stack,
        status,
        problem,
        size,
        tarball,
        spec,
        at,
        current,
    )


async def stack_specs(
    store: Store, stack_id: int, *, package: str | None = None
) -> AsyncGenerator[SpecRecord, None]:
    """The specs a stack holds now, by name, version and hash, with their manifests; streamed."""
    sql = (
        # specs first, by name (its index): only each name's few rows are sorted.
        f"SELECT {_RECORD_COLUMNS} FROM specs s {store.dialect.ordered_join} memberships m"
        " ON s.id = m.spec_id"
        " JOIN stacks st ON st.id = m.stack_id JOIN sources src ON src.id = st.source_id"
        " LEFT JOIN spec_manifests sm ON sm.stack_id = m.stack_id AND sm.spec_id = m.spec_id"
        " WHERE m.stack_id = ? AND m.left IS NULL"
    )
    params: list[object] = [stack_id]
    if package is not None:
        condition, param = name_filter(store, "s.name", package)
        sql += f" AND {condition}"
        params.append(param)
    async with store.conn.execute(f"{sql} ORDER BY s.name, s.version, s.hash", params) as cursor:
        while rows := await cursor.fetchmany(_PAGE):
            for r in rows:
                yield _record(r, current=True)


async def spec_records(store: Store, spec_hash: str) -> list[SpecRecord]:
    """What each stack's crawl recorded for one spec (stacks that never crawled it: none)."""
    async with store.conn.execute(
        f"SELECT {_RECORD_COLUMNS},"
        " EXISTS (SELECT 1 FROM memberships m WHERE m.stack_id = sm.stack_id"
        "  AND m.spec_id = sm.spec_id AND m.left IS NULL)"
        " FROM spec_manifests sm JOIN specs s ON s.id = sm.spec_id"
        " JOIN stacks st ON st.id = sm.stack_id JOIN sources src ON src.id = st.source_id"
        " WHERE s.hash = ? ORDER BY src.name, st.release, st.name",
        (spec_hash,),
    ) as cursor:
        return [_record(r[:-1], current=bool(r[-1])) for r in await cursor.fetchall()]
