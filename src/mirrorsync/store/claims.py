"""Claims: which instance works on a stack or delivers to a webhook, when several
instances share one database.

On SQLite a run holds the whole database (``mirrorsync.lock``'s file lock), so
every claim a run asks for is already its own: :class:`Claims` grants them all.

On PostgreSQL, where several instances run at once, a claim is a session-level
advisory lock, ``pg_try_advisory_lock(kind, id)``, taken on one connection the
instance keeps for its claims and nothing else (:class:`AdvisoryClaims`). Advisory
locks rather than a claims table with ``SELECT ... FOR UPDATE SKIP LOCKED``: a
row lock lives only as long as its transaction, and holding one open for the
minutes a stack's download and crawl take would keep a transaction idle that
long (holding back vacuum, tripping ``idle_in_transaction_session_timeout``),
while an advisory lock needs no transaction at all. It is the server's, so it
goes when the session goes: an instance killed with SIGKILL, or whose host dies,
loses its claims with its connection, and the next run takes those stacks over.
Nothing is left to clean up, and no lease or clock is involved.

The lock's two keys are a namespace per kind (below; ``kind`` marks mirrorsync's
locks apart from other users of advisory locks in the same database) and the
row's id: the stack's id, unique per (source, release, stack), or the webhook's.
``pg_locks`` shows them, and the claim connection's ``application_name``
(``mirrorsync pid=N``) and client address say who holds each.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mirrorsync.errors import StoreError
from mirrorsync.logs import logger

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from mirrorsync.store.db import Connection, Store
    from mirrorsync.store.location import PostgresUrl
    from mirrorsync.store.postgres import PgConnection

log = logger("mirrorsync.store")  # logging imported at its first use (status)


class Kind(enum.IntEnum):
    """What a claim is on: the first key of its advisory lock (``ms`` then a number)."""

    EVENT_IDS = 0x6D737900  # transaction-level, taken by store/events.py
    STACK = 0x6D737901
    WEBHOOK = 0x6D737902
    MIRROR = 0x6D737903  # a local copy (mirrors:) being updated


class Claims:
    """A database that one run holds whole (SQLite, or a dry run): every claim is ours."""

    async def take(self, kind: Kind, key: int) -> str | None:
        """Claim ``key``: None if it is ours now, else who holds it."""
        return None

    async def release(self, kind: Kind, key: int) -> None:
        return None

    async def close(self) -> None:
        return None


class AdvisoryClaims(Claims):
    """PostgreSQL session-level advisory locks, on one connection of their own.

    The connection is opened on the first claim and stays in autocommit mode: it
    never opens a transaction, so holding claims through a long run costs the
    server nothing but the lock entries. psycopg serialises the commands of one
    connection, so a run's stacks claim and release concurrently on it.
    """

    def __init__(self, where: PostgresUrl) -> None:
        import anyio  # PostgreSQL's claims only: a SQLite reader needs no event loop

        self.where = where
        self._conn: PgConnection | None = None
        self._opening = anyio.Lock()
        self.held: set[tuple[Kind, int]] = set()

    async def _connection(self) -> PgConnection:
        from mirrorsync.store.postgres import PgConnection

        async with self._opening:
            if self._conn is None:
                self._conn = await PgConnection.connect(self.where)
            return self._conn

    async def take(self, kind: Kind, key: int) -> str | None:
        if (kind, key) in self.held:  # a session's locks stack: take each once
            return None
        conn = await self._connection()
        async with conn.execute(
            "SELECT pg_try_advisory_lock(CAST(? AS integer), CAST(? AS integer))",
            (int(kind), key),
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None and row[0]:
            self.held.add((kind, key))
            return None
        return (await _holders(conn, kind)).get(key, "another instance")

    async def release(self, kind: Kind, key: int) -> None:
        if (kind, key) not in self.held or self._conn is None:
            return
        self.held.discard((kind, key))
        import anyio

        try:
            with anyio.CancelScope(shield=True):
                await self._conn.execute(
                    "SELECT pg_advisory_unlock(CAST(? AS integer), CAST(? AS integer))",
                    (int(kind), key),
                )
        except StoreError as exc:  # the session is gone, and its locks with it
            log.debug("%s: releasing claim %s %d: %s", self.where, kind.name, key, exc)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self.held.clear()
        if conn is not None:
            import anyio

            with anyio.CancelScope(shield=True):
                await conn.close()  # the server drops every claim of the session


async def holders(store: Store, kind: Kind) -> dict[int, str]:
    """Who holds each claim of ``kind`` now (key -> instance); none on SQLite, where
    a run holds the whole database."""
    if not store.dialect.postgresql:
        return {}
    return await _holders(store.conn, kind)


async def _holders(conn: Connection, kind: Kind) -> dict[int, str]:
    async with conn.execute(
        "SELECT l.objid, coalesce(nullif(a.application_name, ''), 'backend pid ' || l.pid)"
        " || coalesce(' on ' || host(a.client_addr), '') FROM pg_locks l"
        " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid = CAST(CAST(? AS bigint) AS oid)",
        (int(kind),),
    ) as cursor:
        return {int(key): str(name) for key, name in await cursor.fetchall()}


@asynccontextmanager
async def claim(store: Store, kind: Kind, key: int) -> AsyncIterator[str | None]:
    """Hold the claim on ``key`` for the body: yields None if it is ours, else who
    holds it (the body then leaves it alone). Released on the way out, however the
    body ends."""
    holder = await store.claims.take(kind, key)
    try:
        yield holder
    finally:
        if holder is None:
            await store.claims.release(kind, key)


# -- stacks --------------------------------------------------------------------


async def checked_marks(store: Store, source_id: int) -> dict[tuple[str, str], str | None]:
    """When each stack of a source was last checked, read once as a run plans the source.

    A stack whose time has moved when this run claims it was synced meanwhile by
    another instance running at the same time: see :func:`stack`. Times are only
    compared for equality, so no two hosts' clocks need agree.
    """
    async with store.conn.execute(
        "SELECT release, name, last_checked FROM stacks WHERE source_id = ?", (source_id,)
    ) as cursor:
        return {(str(r), str(n)): c for r, n, c in await cursor.fetchall()}


async def serialise(conn: Connection) -> None:
    """Hold the lock on event ids until this transaction ends (PostgreSQL; on SQLite
    the write transaction already holds the database).

    :func:`record` takes it; a transaction that locks rows other writers may
    want before it records events (a snapshot's new specs, a release's row)
    takes it first, so two writers never wait on each other in opposite orders.
    """
    if conn.dialect.postgresql:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(CAST(? AS integer), 0)", (int(Kind.EVENT_IDS),)
        )
