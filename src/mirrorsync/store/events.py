"""The one writer of events: every event enters the change log here, together with
its rows in the webhook outbox, in the caller's transaction.

Nothing else inserts into ``events`` (``tests/test_events_writer.py`` checks it),
so no kind of event can be recorded without being queued for the webhooks whose
filters it matches.

Event ids increase, and ``events --since ID`` is a resume point: no event ever
becomes visible with an id below one a reader has already seen. On SQLite a
write transaction holds the whole database, so this holds by itself. On
PostgreSQL ids come from an identity sequence when rows are inserted, not when
they commit: writer A could take ids 1-100, writer B 101-200 and commit first,
and a reader that had passed 200 would never see A's. So every transaction
that writes events first takes one transaction-level advisory lock
(:func:`serialise`), held until it commits or rolls back: the next writer takes
its ids only after the one before is visible, and commits that write events
become visible in id order. A rolled-back writer leaves a gap, never a late id.

A stack version's spec.added and spec.removed events are not stored one by one
(migration 0012): one row of ``event_rows`` with ``span`` = their number holds
their ids, and the events themselves are derived from the memberships the
version opened or closed, in hash order (the view ``events``;
:func:`mirrorsync.store.eventlog.event_source`).
"""

from __future__ import annotations

from collections.abc import Sequence

from mirrorsync import records
from mirrorsync.store import webhooks
from mirrorsync.store.claims import serialise
from mirrorsync.store.db import Connection
from mirrorsync.store.eventlog import LAST_EVENT_ID


@records.record(frozen=True, slots=True)
class Where:
    """What every event of one write shares: its place, the stack version, the time."""

    source_id: int
    release: str
    stack_id: int | None
    stack_version: int | None
    occurred_at: str


#: The kinds of event a span may stand for, and the memberships each derives from.
SPAN_KINDS = ("spec.added", "spec.removed")


async def record(
    conn: Connection,
    kind: str,
    where: Where,
    *,
    specs: str | None = None,
    spec_id: str = "s.id",
    params: Sequence[object] = (),
    span: int | None = None,
) -> int:
    """Write events of type ``kind`` and enqueue them for webhooks; return how many.

    Without ``specs``, one event about no spec. With it, one event per row of
    ``specs``: a ``FROM ...`` clause (joins, ``WHERE``, ``ORDER BY`` included) whose
    rows give the spec's id as the expression ``spec_id``, bound with ``params``;
    events get ids in its order. Call it inside a write transaction.

    With ``span`` (spec.added or spec.removed, ``where`` naming the stack and
    version): the ``span`` events of the memberships the version opened or
    closed, in hash order, as one stored row holding their ids.
    """
    await serialise(conn)
    before = await _last_id(conn)
    values = (
        kind,
        where.source_id,
        where.release,
        where.stack_id,
        where.stack_version,
        where.occurred_at,
    )
    if span is not None:
        assert kind in SPAN_KINDS and where.stack_id is not None and where.stack_version
        if span <= 0:
            return 0
        first = await _next_id(conn, before)
        await conn.execute(
            "INSERT INTO event_rows (id, type, source_id, release, stack_id, stack_version,"
            " occurred_at, span) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (first, *values, span),
        )
        await _reserve(conn, first + span - 1)
        written = span
    else:
        cursor = await conn.execute(
            "INSERT INTO event_rows (type, source_id, release, stack_id, stack_version,"
            f" occurred_at, spec_id) SELECT ?, ?, ?, ?, ?, ?, {spec_id if specs else 'NULL'}"
            f" {specs or ''}",
            (*values, *params),
        )
        # Counted, not after - before: a rolled-back writer's ids are a gap in between.
        written = max(cursor.rowcount, 0)
    after = await _last_id(conn)
    await webhooks.enqueue(conn, before, after)  # the outbox, in the same transaction
    return written


async def _last_id(conn: Connection) -> int:
    async with conn.execute(LAST_EVENT_ID) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _next_id(conn: Connection, last: int) -> int:
    """The first id a span takes: past every id handed out, rolled-back ones included."""
    if conn.dialect.postgresql:
        sql = "SELECT nextval(pg_get_serial_sequence('event_rows', 'id'))"
    else:
        sql = "SELECT coalesce(max(seq), 0) + 1 FROM sqlite_sequence WHERE name = 'event_rows'"
    async with conn.execute(sql) as cursor:
        row = await cursor.fetchone()
    return max(int(row[0]) if row else 1, last + 1)


async def _reserve(conn: Connection, last: int) -> None:
    """Move the id sequence to ``last``: the next event's id comes after the span's."""
    if conn.dialect.postgresql:
        await conn.execute("SELECT setval(pg_get_serial_sequence('event_rows', 'id'), ?)", (last,))
    else:
        await conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'event_rows'", (last,))
