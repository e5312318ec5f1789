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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mirrorsync.store import webhooks
from mirrorsync.store.claims import serialise
from mirrorsync.store.db import Connection


@dataclass(frozen=True, slots=True)
class Where:
    """What every event of one write shares: its place, the stack version, the time."""

    source_id: int
    release: str
    stack_id: int | None
    stack_version: int | None
    occurred_at: str


async def record(
    conn: Connection,
    kind: str,
    where: Where,
    *,
    specs: str | None = None,
    spec_id: str = "s.id",
    params: Sequence[object] = (),
) -> int:
    """Write events of type ``kind`` and enqueue them for webhooks; return how many.

    Without ``specs``, one event about no spec. With it, one event per row of
    ``specs``: a ``FROM ...`` clause (joins, ``WHERE``, ``ORDER BY`` included) whose
    rows give the spec's id as the expression ``spec_id``, bound with ``params``;
    events get ids in its order. Call it inside a write transaction.
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
    cursor = await conn.execute(
        "INSERT INTO events (type, source_id, release, stack_id, stack_version, occurred_at,"
        f" spec_id) SELECT ?, ?, ?, ?, ?, ?, {spec_id if specs else 'NULL'} {specs or ''}",
        (*values, *params),
    )
    # Counted, not after - before: a rolled-back writer's ids are a gap in between.
    written = max(cursor.rowcount, 0)
    after = await _last_id(conn)
    await webhooks.enqueue(conn, before, after)  # the outbox, in the same transaction
    return written


async def _last_id(conn: Connection) -> int:
    async with conn.execute("SELECT coalesce(max(id), 0) FROM events") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
