"""The releases a source lists: which are known, and their arrivals and departures.

A release listed for the first time, or again, is marked present with a
``release.added`` event; one no longer listed is marked gone with a
``release.removed`` event. Each is recorded once between instances planning the
same catalogue (see :func:`record_releases`).
"""

from __future__ import annotations

from collections.abc import Iterable

from mirrorsync.store.claims import serialise
from mirrorsync.store.db import Store
from mirrorsync.store.events import Where, record


async def known_releases(store: Store, source_id: int) -> set[str]:
    async with store.conn.execute(
        "SELECT name FROM releases WHERE source_id = ? AND present = 1", (source_id,)
    ) as cursor:
        return {row[0] for row in await cursor.fetchall()}


async def record_releases(
    store: Store, source_id: int, added: Iterable[str], removed: Iterable[str], at: str
) -> int:
    """Mark releases as listed or gone, with one event each; returns the event count.

    A release gets its event only if this transaction changes its state: several
    instances planning the same catalogue at once record it once between them
    (on PostgreSQL the second upsert waits for the first and then finds nothing to do).
    """
    count = 0
    async with store.transaction() as conn:
        await serialise(conn)  # before a release's row is locked: see serialise()
        for name in added:
            cursor = await conn.execute(
                "INSERT INTO releases (source_id, name, present, added_at) VALUES (?, ?, 1, ?)"
                " ON CONFLICT (source_id, name) DO UPDATE"
                " SET present = 1, added_at = excluded.added_at, removed_at = NULL"
                " WHERE releases.present = 0",
                (source_id, name, at),
            )
            if cursor.rowcount > 0:
                where = Where(source_id, name, None, None, at)
                count += await record(conn, "release.added", where)
        for name in removed:
            cursor = await conn.execute(
                "UPDATE releases SET present = 0, removed_at = ?"
                " WHERE source_id = ? AND name = ? AND present = 1",
                (at, source_id, name),
            )
            if cursor.rowcount > 0:
                where = Where(source_id, name, None, None, at)
                count += await record(conn, "release.removed", where)
    return count
