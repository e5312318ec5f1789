"""The one writer of events: every event enters the change log here, together with
its rows in the webhook outbox, in the caller's transaction.

Nothing else inserts into ``events`` (``tests/test_events_writer.py`` checks it),
so no kind of event can be recorded without being queued for the webhooks whose
filters it matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mirrorsync.store import webhooks
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
    before = await _last_id(conn)
    values = (
        kind,
        where.source_id,
        where.release,
        where.stack_id,
        where.stack_version,
        where.occurred_at,
    )
    await conn.execute(
        "INSERT INTO events (type, source_id, release, stack_id, stack_version, occurred_at,"
        f" spec_id) SELECT ?, ?, ?, ?, ?, ?, {spec_id if specs else 'NULL'} {specs or ''}",
        (*values, *params),
    )
    after = await _last_id(conn)
    await webhooks.enqueue(conn, before, after)  # the outbox, in the same transaction
    return after - before


async def _last_id(conn: Connection) -> int:
    async with conn.execute("SELECT coalesce(max(id), 0) FROM events") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
