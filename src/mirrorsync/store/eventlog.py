"""Reading the change log: an event's columns and record, the subquery that expands a
version's span of spec events, filters, the events streamed in id order, the newest
page, counts by type, the last id handed out. (Writing it is ``store.events``.)"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from mirrorsync.records import record
from mirrorsync.store.db import Store
from mirrorsync.store.overview import name_filter
from mirrorsync.store.specs import PAGE

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any


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
        while rows := await cursor.fetchmany(PAGE):
            for r in rows:
                yield Event(*r)


async def event_counts(store: Store) -> dict[str, int]:
    """How many events of each type the database holds, all time."""
    async with store.conn.execute(
        "SELECT type, sum(coalesce(span, 1)) FROM event_rows GROUP BY type"
    ) as cursor:
        return {str(r[0]): int(r[1]) for r in await cursor.fetchall()}
