"""Webhook outbox: endpoints, which events each must receive, and the batches sent.

``enqueue`` is called inside the transaction that writes events, so an event and
its pending deliveries are committed together or not at all. A batch (delivery)
is fixed before its first attempt and keeps its message id across retries; its
outbox rows are deleted when the receiver acknowledges it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from mirrorsync.records import record
from mirrorsync.redact import Url, redact_url
from mirrorsync.store.claims import serialise
from mirrorsync.store.db import Connection, Store
from mirrorsync.store.dialect import Dialect
from mirrorsync.store.eventlog import EVENT_COLUMNS, EVENT_JOINS, LAST_EVENT_ID, Event, event_source
from mirrorsync.store.overview import WebhookSummary as WebhookSummary
from mirrorsync.store.overview import holding_row
from mirrorsync.store.overview import summaries as summaries
from mirrorsync.text import bounded

#: Filter fields and the SQL expression each matches against (see ``enqueue``).
FILTER_FIELDS = {"type": "e.type", "release": "e.release", "stack": "st.name", "package": "s.name"}

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any


@record(frozen=True, slots=True)
class Registration:
    """A webhook as configured: which events it wants, as shell globs."""

    name: str
    url: Url  # only its display form is stored
    types: Sequence[str] | None = None  # None: every type
    releases: Sequence[str] | None = None
    stacks: Sequence[str] | None = None
    packages: Sequence[str] | None = None

    def filters(self) -> list[tuple[str, str]]:
        """(field, SQL GLOB) pairs. SQLite negates a set with ``[^``, fnmatch with ``[!``."""
        pairs: list[tuple[str, str]] = []
        for field, globs in (
            ("type", self.types),
            ("release", self.releases),
            ("stack", self.stacks),
            ("package", self.packages),
        ):
            pairs += [(field, glob.replace("[!", "[^")) for glob in globs or ()]
        return pairs


@record(frozen=True, slots=True)
class WebhookRow:
    id: int
    name: str
    url: str
    configured: bool
    enabled: bool
    disabled_reason: str | None
    disabled_at: str | None
    registered_after_event: int
    failures: int
    next_attempt_at: str | None
    last_success_at: str | None
    last_error: str | None
    last_error_at: str | None


@record(frozen=True, slots=True)
class Delivery:
    id: int
    webhook_id: int
    message_id: str
    state: str
    created_at: str
    oldest_event_at: str
    first_event_id: int
    last_event_id: int
    event_count: int
    attempts: int


_WEBHOOK_COLUMNS = (
    "id, name, url, configured, enabled, disabled_reason, disabled_at, registered_after_event,"
    " failures, next_attempt_at, last_success_at, last_error, last_error_at"
)
_DELIVERY_COLUMNS = (
    "id, webhook_id, message_id, state, created_at, oldest_event_at, first_event_id,"
    " last_event_id, event_count, attempts"
)


def _webhook(row: Any) -> WebhookRow:
    r = tuple(row)
    return WebhookRow(r[0], r[1], r[2], bool(r[3]), bool(r[4]), *r[5:])


def _match(field: str, dialect: Dialect) -> str:
    """An event matches a field when the webhook has no glob for it, or one matches."""
    value = FILTER_FIELDS[field]
    rows = f"SELECT 1 FROM webhook_filters f WHERE f.webhook_id = w.id AND f.field = '{field}'"
    return f"(NOT EXISTS ({rows}) OR EXISTS ({rows} AND {dialect.glob(value, 'f.glob')}))"


@cache
def _enqueue_sql(dialect: Dialect) -> str:
    return (
        "INSERT INTO webhook_outbox (webhook_id, event_id)"
        f" SELECT w.id, e.id FROM {event_source(':after', ':upto')} e"
        " JOIN webhooks w ON w.configured = 1 AND w.enabled = 1"
        " AND (CAST(:hook AS INTEGER) IS NULL OR w.id = :hook)"
        " LEFT JOIN stacks st ON st.id = e.stack_id LEFT JOIN specs s ON s.id = e.spec_id"
        " WHERE e.id > :after AND e.id <= :upto AND "
        + " AND ".join(_match(field, dialect) for field in FILTER_FIELDS)
        + " ORDER BY e.id ON CONFLICT DO NOTHING"
    )


# -- inside the caller's transaction -------------------------------------------


async def enqueue(
    conn: Connection, after_id: int, upto_id: int, *, webhook_id: int | None = None
) -> int:
    """Put events ``after_id < id <= upto_id`` in the outbox of every webhook they match.

    Call it in the transaction that wrote those events. Returns the rows added.
    """
    if upto_id <= after_id:
        return 0
    async with conn.execute(
        "SELECT count(*) FROM webhooks WHERE configured = 1 AND enabled = 1"
    ) as cursor:
        row = await cursor.fetchone()
    if not row or not row[0]:
        return 0  # no span is expanded for nobody
    cursor = await conn.execute(
        _enqueue_sql(conn.dialect), {"after": after_id, "upto": upto_id, "hook": webhook_id}
    )
    return max(cursor.rowcount, 0)


# -- transactions of their own -------------------------------------------------


async def register(store: Store, hooks: Sequence[Registration], at: str) -> None:
    """Make the table match the configuration before a run enqueues anything.

    A new webhook receives events from now on. A webhook whose URL changed is
    enabled again (it may have been disabled by a 410 from the old URL). One that
    left the configuration keeps its pending deliveries but gets no new events.

    Only a URL's display form is stored (userinfo and secret-looking query
    values masked, see ``redact``); a change is a change of that form. Rows that
    older versions stored in clear are masked here, before the comparison.
    """
    async with store.transaction() as conn:
        # Under the event-id lock: no writer's events fall between the id a new
        # webhook is registered after and the outbox rows that writer enqueues.
        await serialise(conn)
        async with conn.execute("SELECT id, url FROM webhooks") as cursor:
            stored = await cursor.fetchall()
        await conn.executemany(
            "UPDATE webhooks SET url = ? WHERE id = ?",
            [(redact_url(url), i) for i, url in stored if redact_url(url) != url],
        )
        for hook in hooks:
            await conn.execute(
                "INSERT INTO webhooks (name, url, registered_at, registered_after_event)"
                f" VALUES (?, ?, ?, ({LAST_EVENT_ID}))"
                " ON CONFLICT (name) DO UPDATE SET configured = 1, url = excluded.url,"
                " forgotten_at = NULL,"
                " enabled = CASE WHEN webhooks.url = excluded.url THEN webhooks.enabled ELSE 1 END,"
                " disabled_reason = CASE WHEN webhooks.url = excluded.url"
                " THEN webhooks.disabled_reason END,"
                " disabled_at = CASE WHEN webhooks.url = excluded.url"
                " THEN webhooks.disabled_at END",
                (hook.name, hook.url.display, at),
            )
            webhook_id = await _scalar(conn, "SELECT id FROM webhooks WHERE name = ?", (hook.name,))
            await conn.execute("DELETE FROM webhook_filters WHERE webhook_id = ?", (webhook_id,))
            await conn.executemany(
                "INSERT INTO webhook_filters (webhook_id, field, glob) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(webhook_id, field, glob) for field, glob in hook.filters()],
            )
        names = [hook.name for hook in hooks]
        kept = f" WHERE name NOT IN ({', '.join('?' for _ in names)})" if names else ""  # no IN ()
        await conn.execute(f"UPDATE webhooks SET configured = 0{kept}", names)


async def get(store: Store, name: str) -> WebhookRow | None:
    async with store.conn.execute(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE name = ?", (name,)
    ) as cursor:
        row = await cursor.fetchone()
    return _webhook(row) if row else None


async def next_delivery(store: Store, webhook_id: int, max_batch: int, at: str) -> Delivery | None:
    """The oldest pending delivery, else a new batch of the lowest waiting events."""
    async with store.transaction() as conn:
        async with conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries"
            " WHERE webhook_id = ? AND state = 'pending' ORDER BY id LIMIT 1",
            (webhook_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row:
            return Delivery(*row)
        return await _new_batch(conn, webhook_id, max_batch, at, "pending")


async def delivery_events(store: Store, delivery_id: int) -> list[Event]:
    """The events of one delivery, in id order, with the fields of ``events --json``."""
    async with store.conn.execute(
        "SELECT first_event_id, last_event_id FROM webhook_deliveries WHERE id = ?",
        (delivery_id,),
    ) as cursor:
        bounds = await cursor.fetchone()
    if bounds is None:
        return []
    first, last = int(bounds[0]), int(bounds[1])
    async with store.conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM webhook_outbox o"
        f" JOIN {event_source('?', '?')} e ON e.id = o.event_id"
        f" {EVENT_JOINS} WHERE o.delivery_id = ? ORDER BY e.id",
        (first - 1, last, first - 1, last, delivery_id),
    ) as cursor:
        return [Event(*row) for row in await cursor.fetchall()]


async def acknowledge(store: Store, delivery: Delivery, at: str) -> None:
    """The receiver answered 2xx: the batch is done and its events leave the outbox."""
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM webhook_outbox WHERE delivery_id = ?", (delivery.id,))
        await conn.execute(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1,"
            " last_attempt_at = ?, finished_at = ? WHERE id = ?",
            (at, at, delivery.id),
        )
        await conn.execute(
            "UPDATE webhooks SET failures = 0, next_attempt_at = NULL, last_success_at = ?"
            " WHERE id = ?",
            (at, delivery.webhook_id),
        )


async def record_failure(
    store: Store,
    delivery: Delivery,
    error: str,
    at: str,
    *,
    next_attempt_at: str,
    dead_before: str,
    max_batch: int,
) -> int:
    """A failed attempt: schedule the next one; whatever is older than ``dead_before`` dies.

    Every pending delivery of the webhook whose oldest event occurred before
    ``dead_before`` becomes dead, and waiting events that old are batched into
    dead deliveries, so ``status`` and ``webhooks list`` count them. Returns the
    number of events that became dead.
    """
    error = bounded(error)  # a receiver's words, stored as received (bounded)
    async with store.transaction() as conn:
        webhook_id = delivery.webhook_id
        await conn.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = ?,"
            " last_error = ? WHERE id = ?",
            (at, error, delivery.id),
        )
        await conn.execute(
            "UPDATE webhooks SET failures = failures + 1, next_attempt_at = ?,"
            " last_error = ?, last_error_at = ? WHERE id = ?",
            (next_attempt_at, error, at, webhook_id),
        )
        dead = await _scalar(
            conn,
            "SELECT coalesce(sum(event_count), 0) FROM webhook_deliveries"
            " WHERE webhook_id = ? AND state = 'pending' AND oldest_event_at < ?",
            (webhook_id, dead_before),
        )
        await conn.execute(
            "UPDATE webhook_deliveries SET state = 'dead', finished_at = ?,"
            " last_error = coalesce(last_error, ?)"
            " WHERE webhook_id = ? AND state = 'pending' AND oldest_event_at < ?",
            (at, error, webhook_id, dead_before),
        )
        while batch := await _new_batch(
            conn, webhook_id, max_batch, at, "dead", before=dead_before, error=error
        ):
            dead += batch.event_count
        return dead


async def due(store: Store, webhook_id: int, at: str) -> bool:
    """Whether the webhook, enabled and not waiting for a retry at ``at``, has events
    to send (waiting, or in a pending batch)."""
    async with store.conn.execute(
        "SELECT 1 FROM webhooks w WHERE w.id = ? AND w.enabled = 1"
        " AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= ?)"
        " AND EXISTS (SELECT 1 FROM webhook_outbox o"
        "   LEFT JOIN webhook_deliveries d ON d.id = o.delivery_id"
        "   WHERE o.webhook_id = w.id AND (o.delivery_id IS NULL OR d.state = 'pending'))",
        (webhook_id, at),
    ) as cursor:
        return await cursor.fetchone() is not None


async def cap_next_attempt(store: Store, webhook_id: int, latest: str) -> bool:
    """Bring a next attempt later than ``latest`` back to it; True if it was later."""
    async with store.transaction() as conn:
        cursor = await conn.execute(
            "UPDATE webhooks SET next_attempt_at = ? WHERE id = ? AND next_attempt_at > ?",
            (latest, webhook_id, latest),
        )
        return cursor.rowcount > 0


@record(frozen=True, slots=True)
class Purged:
    delivered: int  # delivered batches whose records were dropped
    dead_deliveries: int  # dead batches dropped, with their events' outbox rows
    dead_events: int


async def purge(
    store: Store, webhook_id: int, *, delivered_before: str, dead_before: str
) -> Purged:
    """Bound the outbox: drop the records of batches delivered before
    ``delivered_before`` and the batches (with their outbox rows) that died before
    ``dead_before``. Events themselves stay: ``replay`` can send them again."""
    async with store.transaction() as conn:
        cursor = await conn.execute(
            "DELETE FROM webhook_deliveries"
            " WHERE webhook_id = ? AND state = 'delivered' AND finished_at < ?",
            (webhook_id, delivered_before),
        )
        delivered = max(cursor.rowcount, 0)
        expired = (
            "SELECT id FROM webhook_deliveries"
            " WHERE webhook_id = ? AND state = 'dead' AND finished_at < ?"
        )
        cursor = await conn.execute(
            f"DELETE FROM webhook_outbox WHERE webhook_id = ? AND delivery_id IN ({expired})",
            (webhook_id, webhook_id, dead_before),
        )
        dead_events = max(cursor.rowcount, 0)
        cursor = await conn.execute(
            f"DELETE FROM webhook_deliveries WHERE id IN ({expired})", (webhook_id, dead_before)
        )
        return Purged(delivered, max(cursor.rowcount, 0), dead_events)


async def disable(store: Store, webhook_id: int, reason: str, at: str) -> None:
    """The endpoint answered 410 Gone: no more events are enqueued or sent to it."""
    reason = bounded(reason)
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE webhooks SET enabled = 0, disabled_reason = ?, disabled_at = ?,"
            " last_error = ?, last_error_at = ? WHERE id = ?",
            (reason, at, reason, at, webhook_id),
        )


async def enable(store: Store, webhook_id: int) -> None:
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE webhooks SET enabled = 1, disabled_reason = NULL, disabled_at = NULL,"
            " failures = 0, next_attempt_at = NULL WHERE id = ?",
            (webhook_id,),
        )


async def revive_dead(store: Store, webhook_id: int) -> int:
    """Dead deliveries become pending again (same batches, same message ids)."""
    async with store.transaction() as conn:
        cursor = await conn.execute(
            "UPDATE webhook_deliveries SET state = 'pending', finished_at = NULL"
            " WHERE webhook_id = ? AND state = 'dead'",
            (webhook_id,),
        )
        return max(cursor.rowcount, 0)


@record(frozen=True, slots=True)
class Replayed:
    enqueued: int  # events put in the outbox again
    waiting: int  # matching events already pending
    dead: int  # matching events in dead deliveries (``retry --dead`` sends those)


async def replay(store: Store, webhook_id: int, since: int) -> Replayed:
    """Enqueue again every matching event with id above ``since``."""
    async with store.transaction() as conn:
        await serialise(conn)  # every event up to the newest is committed and visible
        upto = await _scalar(conn, LAST_EVENT_ID, ())
        enqueued = await enqueue(conn, since, upto, webhook_id=webhook_id)
        async with conn.execute(
            "SELECT coalesce(d.state, 'pending'), count(*) FROM webhook_outbox o"
            " LEFT JOIN webhook_deliveries d ON d.id = o.delivery_id"
            " WHERE o.webhook_id = ? AND o.event_id > ? GROUP BY 1",
            (webhook_id, since),
        ) as cursor:
            counts = {state: int(n) for state, n in await cursor.fetchall()}
    return Replayed(enqueued, counts.get("pending", 0) - enqueued, counts.get("dead", 0))


async def forget(store: Store, name: str, at: str) -> bool | None:
    """End the listing of a webhook that left the configuration; its deliveries and
    their events stay. True if forgotten now, False if it was already, None if no
    webhook has that name."""
    async with store.transaction() as conn:
        async with conn.execute(
            "SELECT forgotten_at FROM webhooks WHERE name = ?", (name,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        if row[0] is not None:
            return False
        await conn.execute(
            "UPDATE webhooks SET forgotten_at = ?, configured = 0 WHERE name = ?", (at, name)
        )
    return True


async def deliveries(store: Store, webhook_id: int) -> list[Delivery]:
    """Every delivery of a webhook, oldest first."""
    async with store.conn.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id",
        (webhook_id,),
    ) as cursor:
        return [Delivery(*row) for row in await cursor.fetchall()]


# -- helpers -------------------------------------------------------------------


async def _new_batch(
    conn: Connection,
    webhook_id: int,
    max_batch: int,
    at: str,
    state: str,
    *,
    before: str | None = None,
    error: str | None = None,
) -> Delivery | None:
    """Fix the next ``max_batch`` waiting events (optionally only those older than
    ``before``) as one delivery with a fresh message id."""
    async with conn.execute(
        "SELECT o.event_id, e.occurred_at FROM webhook_outbox o"
        f" JOIN event_rows e ON e.id = {holding_row('o.event_id')}"
        " WHERE o.webhook_id = ? AND o.delivery_id IS NULL AND (CAST(? AS TEXT) IS NULL OR e.occurred_at < ?)"
        " ORDER BY o.event_id LIMIT ?",
        (webhook_id, before, before, max_batch),
    ) as cursor:
        rows = list(await cursor.fetchall())
    if not rows:
        return None
    ids = [int(r[0]) for r in rows]
    cursor = await conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, message_id, state, created_at,"
        " oldest_event_at, first_event_id, last_event_id, event_count, last_error, finished_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            webhook_id,
            f"msg_{_token_hex(16)}",
            state,
            at,
            min(str(r[1]) for r in rows),
            ids[0],
            ids[-1],
            len(ids),
            error,
            at if state == "dead" else None,
        ),
    )
    created = await cursor.fetchone()
    assert created is not None
    delivery_id = int(created[0])
    await conn.executemany(
        "UPDATE webhook_outbox SET delivery_id = ? WHERE webhook_id = ? AND event_id = ?",
        [(delivery_id, webhook_id, event_id) for event_id in ids],
    )
    async with conn.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?", (delivery_id,)
    ) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return Delivery(*row)


async def _scalar(conn: Connection, sql: str, params: Sequence[object]) -> int:
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def names(store: Store) -> list[str]:
    """Every webhook's name the database knows, forgotten ones included (``forget`` globs)."""
    async with store.conn.execute("SELECT name FROM webhooks ORDER BY name") as cursor:
        return [str(r[0]) for r in await cursor.fetchall()]


def _token_hex(n: int) -> str:
    import secrets  # hmac, hashlib: a reader of the store (status) does not pay for them

    return secrets.token_hex(n)
