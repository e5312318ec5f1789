"""The database (SQLite, or PostgreSQL): opening it safely, applying the numbered migrations (``store/schema.py``), transactions.

Two ways in: ``Store.open`` for the commands that write (``once``, ``webhooks
retry/replay``), which creates and migrates the database inside one write
transaction; ``Store.open_read_only`` for every command that only reads, which
opens it ``mode=ro``, never migrates, and refuses a schema it does not match.

Every SQLite error, wherever it happens (a query, a fetch, a commit), leaves the
connection as a :class:`~mirrorsync.errors.StoreError` naming the file: a
damaged file as :class:`~mirrorsync.errors.DatabaseDamagedError`, which also
stops the store from writing anything more.

A :class:`~mirrorsync.store.location.PostgresUrl` opens the same store on a
PostgreSQL database instead (:mod:`mirrorsync.store.postgres`, psycopg 3): the
same statements, the same numbered migrations (in PostgreSQL's types, or a
``NNNN_name.postgresql.sql`` adds what only PostgreSQL needs), the same errors.
What differs is said once, in :mod:`mirrorsync.store.dialect`, reached as
``store.dialect`` or ``conn.dialect``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from mirrorsync.errors import (
    DatabaseDamagedError,
    DatabaseFullError,
    DatabasePathError,
    NoDatabaseError,
    StoreError,
)
from mirrorsync.location import PostgresUrl
from mirrorsync.logs import logger
from mirrorsync.store.dialect import MIGRATION_LOCK_KEY, POSTGRESQL, SQLITE, Dialect
from mirrorsync.store.schema import check_version, migrations, read_version, statements

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:  # psycopg is imported only when a PostgreSQL database is opened
    from pathlib import Path

    import anyio

    from mirrorsync.location import Location, ReadLocation
    from mirrorsync.store.aio import _Connection
    from mirrorsync.store.claims import Claims
    from mirrorsync.store.postgres import PgConnection

# The event loop (anyio) and aiosqlite are imported when a database is opened through
# them, not with this module: ``status`` reads a SQLite file with neither
# (store/readonly.py, issue 31's start-up).

log = logger("mirrorsync.store")  # logging imported at its first use (status)


def now() -> datetime:
    """The clock every stored timestamp comes from (tests replace it)."""
    return datetime.now(UTC)


def utcnow() -> str:
    """Timestamps are ISO 8601 UTC with microseconds, so they sort as text."""
    return now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _damage(exc: sqlite3.Error) -> str | None:
    """How ``exc`` shows the file is damaged, or None if it does not."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB":
        return "the database is damaged"
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and text.startswith(
        ("no such table", "no such column")
    ):
        return "the database's schema is damaged"
    return None


def database_error(path: Path | str, exc: sqlite3.Error) -> StoreError:
    """The one translation of a SQLite error into mirrorsync's, naming the file."""
    damage = _damage(exc)
    error: StoreError
    if damage is not None:
        error = DatabaseDamagedError(
            f"{path}: {damage} ({exc}); check it with: sqlite3 {path} "
            '"PRAGMA integrity_check", and restore it from a backup if that reports errors'
        )
    elif getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        error = DatabaseFullError(
            f"{path}: database or disk is full; the change was rolled back and "
            f"nothing of it kept: free space on the file system of {_directory(path)} "
            "(or move the database elsewhere with 'database:'), then run again"
        )
    else:
        error = StoreError(f"{path}: {exc}")
    error.sqlite_error = getattr(exc, "sqlite_errorname", None)
    return error


def _directory(path: Path | str) -> str:
    """The directory of the SQLite file ``path`` (``.`` for a bare file name, as
    ``Path.parent`` says)."""
    return os.path.dirname(path) or "."


def sqlite_uri(path: Path | str, query: str) -> str:
    """A ``file:`` URI of the SQLite file ``path`` (made absolute) with ``query``
    (``mode=ro``): ``%``, ``?`` and ``#`` in the path escaped, the three characters
    SQLite's URI rules (https://www.sqlite.org/uri.html) give a meaning; every other
    byte of a path SQLite takes as written. (``urllib.parse.quote`` would do too,
    and costs ``status`` 1.5 ms to import.)"""
    escaped = os.path.abspath(path).replace("%", "%25").replace("?", "%3F").replace("#", "%23")
    return f"file:{escaped}?{query}"


#: Tries of ``PRAGMA journal_mode=WAL`` when first opens race (0.05 s apart: 10 s).
_WAL_ATTEMPTS = 200


async def _connect(path: Path | str, target: str, *, uri: bool = False) -> _Connection:
    def connector() -> sqlite3.Connection:
        # timeout is SQLite's busy timeout, from the first statement on: another
        # process may be creating the file or switching it to WAL at this moment.
        return sqlite3.connect(target, uri=uri, isolation_level=None, timeout=10.0)

    import anyio

    from mirrorsync.store.aio import _Connection

    _require_file(path)
    conn = _Connection(connector, path, database_error)
    try:
        await conn
    except sqlite3.Error as exc:
        # aiosqlite stops its thread but does not wait for it: wait here, or the
        # thread reports to an event loop that is closed by then (a traceback).
        await anyio.to_thread.run_sync(conn._thread.join)
        raise StoreError(f"{path}: cannot open database: {exc}") from None
    return conn


def _require_file(path: Path | str) -> None:
    """StoreError, one line, if something other than a regular file is at ``path``."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # none yet (SQLite creates it), or SQLite's own error says why
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise DatabasePathError(f"{path}: cannot open database: {kind}; 'database:' names a file")


#: The store's connection: aiosqlite's, or the same interface on psycopg's.
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    Connection: TypeAlias = "_Connection | PgConnection"
else:
    Connection = "_Connection | PgConnection"


#: How SQLite refuses a read-only open of a WAL database whose -shm it cannot make:
#: CANTOPEN, or (SQLite 3.22+, a directory it may not write) READONLY_DIRECTORY.
_NO_SHARED_MEMORY = ("SQLITE_CANTOPEN", "SQLITE_READONLY_DIRECTORY")


class Store:
    """One connection (SQLite in WAL mode, or PostgreSQL); write transactions are serialised.

    ``path`` names the database in messages: the file, or the PostgreSQL URL
    with its credentials masked.
    """

    def __init__(self, conn: Connection, path: ReadLocation, *, read_only: bool = False) -> None:
        self.conn: Connection = conn
        self._conn = conn
        self.path = path
        self.dialect: Dialect = conn.dialect
        self.read_only = read_only
        self._write_lock: anyio.Lock | None = None  # made at the first transaction
        self._clock_warned = False
        self.dry_run = False  # every write inside one transaction that close() rolls back
        self._claims: Claims | None = None  # made when first asked for (status never is)
        #: Spec rows this store saw committed: hash -> (id, name, version). A spec's
        #: row is written once and never changes or goes, so what a committed
        #: transaction saw stays true for the run: a stack's sync looks up only
        #: the hashes no earlier stack brought (``writes.commit_snapshot`` fills it).
        self.known_specs: dict[str, tuple[int, str, str]] = {}
        #: The (source id, release) whose stacks ``known_specs`` holds rows of: it is
        #: emptied when a stack of another release commits, so it never holds more
        #: than one release's specs however many releases a run syncs.
        self.known_scope: tuple[int, str] | None = None

    @property
    def claims(self) -> Claims:
        """Who works on a stack or a webhook endpoint (store/claims.py): on SQLite every
        claim is granted, one run holding the database whole; on PostgreSQL each is an
        advisory lock (set by :meth:`open`). Made when first asked for."""
        if self._claims is None:
            from mirrorsync.store.claims import Claims

            self._claims = Claims()
        return self._claims

    @claims.setter
    def claims(self, claims: Claims) -> None:
        self._claims = claims

    @property
    def damaged(self) -> DatabaseDamagedError | None:
        """The damage this store ran into, if any: it writes nothing more."""
        return self._conn.damaged

    @classmethod
    async def open(cls, path: Location, *, create: bool = True, dry_run: bool = False) -> Store:
        """The database for a command that writes: created if ``create``, migrated.

        ``dry_run``: nothing is ever written to disk. An existing database gets
        one write transaction that :meth:`close` rolls back (transactions become
        savepoints in it, pending migrations included); a database that does not
        exist yet is made in memory, so no file or directory is created.
        """
        if isinstance(path, PostgresUrl):
            return await cls._open_postgres(path, create=create, dry_run=dry_run)
        exists = path.exists()
        if not create and not exists:
            raise NoDatabaseError(f"no database yet at {path}; run 'mirrorsync once' first")
        in_memory = dry_run and not exists
        _require_file(path)
        try:
            if create and not dry_run:
                # Directories it makes and the file itself are owner-only from the
                # first byte; SQLite gives -wal/-shm/-journal the database's mode.
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: cannot open database: {exc}") from None
        conn = await _connect(path, ":memory:" if in_memory else str(path))
        store = cls(conn, path)
        try:
            await store._configure()
            if dry_run and not in_memory:
                await conn.execute("BEGIN IMMEDIATE")
                await store._migrate(in_transaction=True)
            else:
                await store._migrate()
                if dry_run:
                    await conn.execute("BEGIN IMMEDIATE")
            store.dry_run = dry_run
        except BaseException:
            await conn.close()
            raise
        return store

    @classmethod
    async def _open_postgres(cls, where: PostgresUrl, *, create: bool, dry_run: bool) -> Store:
        """The PostgreSQL database: it must exist on the server (the store creates
        tables, never databases); ``create=False`` refuses one with no schema yet."""
        from mirrorsync.store.postgres import PgConnection

        conn = await PgConnection.connect(where)
        store = cls(conn, where)
        try:
            if not create and await read_version(conn, where) == 0:
                raise NoDatabaseError(f"no database yet at {where}; run 'mirrorsync once' first")
            if dry_run:
                await conn.execute(store.dialect.begin_write)
                await store._migrate(in_transaction=True)
            else:
                await store._migrate()
                # Several instances share a server's database: each stack and webhook
                # endpoint is claimed before it is worked on (a dry run claims nothing).
                from mirrorsync.store.claims import AdvisoryClaims

                store.claims = AdvisoryClaims(where)
            store.dry_run = dry_run
        except BaseException:
            await conn.close()
            raise
        return store

    @classmethod
    async def open_read_only(cls, path: ReadLocation) -> Store:
        """The database for a command that only reads: opened ``mode=ro``, never
        migrated or written, even on a read-only directory.

        NoDatabaseError if there is none yet (or its first migration is not
        committed yet), SchemaError if its schema is not this mirrorsync's.
        """
        if isinstance(path, PostgresUrl):
            from mirrorsync.store.postgres import PgConnection

            pg = await PgConnection.connect(path, read_only=True)
            try:
                check_version(path, await read_version(pg, path), read_only=True)
            except BaseException:
                await pg.close()
                raise
            return cls(pg, path, read_only=True)

        async def connect(path: Path | str, target: str) -> _Connection:
            return await _connect(path, target, uri=True)

        return await cls.open_file_read_only(path, connect)

    @classmethod
    async def open_file_read_only(
        cls, path: Path | str, connect: Callable[[Path | str, str], Awaitable[Any]]
    ) -> Store:
        """A SQLite file opened ``mode=ro`` through ``connect(path, uri)``: aiosqlite's
        connection here, a synchronous one for ``store/readonly.py``; the same
        refusals either way."""
        if not os.path.exists(path):  # noqa: ASYNC240 - one stat; readonly.py runs it with no loop
            raise NoDatabaseError(f"no database yet at {path}; run 'mirrorsync once' first")
        conn = await connect(path, sqlite_uri(path, "mode=ro"))
        try:
            version = await read_version(conn, path)
        except StoreError as exc:
            await conn.close()
            if exc.sqlite_error not in _NO_SHARED_MEMORY:
                raise
            # A WAL database in a directory we cannot write, without its -wal and
            # -shm files: no writer has it open (one would have made them), so it
            # can be read as it is on disk.
            conn = await connect(path, sqlite_uri(path, "mode=ro&immutable=1"))
            try:
                version = await read_version(conn, path)
            except BaseException:
                await conn.close()
                raise
        try:
            check_version(path, version, read_only=True)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path, read_only=True)

    async def close(self) -> None:
        """Close the connection (a dry run's transaction rolled back first); a store
        that ran into damage ends by raising it."""
        import anyio

        with anyio.CancelScope(shield=True):  # a cancelled run still closes its database
            if self.dry_run:
                await self._rollback()
            if self._claims is not None:
                await self._claims.close()
            await self.conn.close()
        if self.damaged is not None:
            raise self.damaged

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _configure(self) -> None:
        if self.dialect is not SQLITE:
            return
        import anyio

        # Switching a new file to WAL while other first opens do the same can answer
        # "database is locked" without SQLite's busy handler being asked (it would
        # deadlock): tried again, briefly, as the busy timeout would have.
        for attempt in range(_WAL_ATTEMPTS):
            try:
                await self.conn.execute("PRAGMA journal_mode=WAL")
                break
            except StoreError as exc:
                if not (exc.sqlite_error or "").startswith("SQLITE_BUSY") or (
                    attempt == _WAL_ATTEMPTS - 1
                ):
                    raise
                await anyio.sleep(0.05)
        for pragma in (
            "PRAGMA synchronous=NORMAL",  # durable at checkpoints; WAL keeps commits atomic
            "PRAGMA foreign_keys=ON",
            "PRAGMA temp_store=MEMORY",
        ):
            await self.conn.execute(pragma)

    async def _migrate(self, *, in_transaction: bool = False) -> None:
        """Bring the schema up to date in one write transaction that reads the version
        itself, so concurrent first opens never apply a migration twice
        (``in_transaction``: inside the one already open, left open)."""
        known = migrations(self.dialect)
        newest = known[-1][0] if known else 0
        if await read_version(self._conn, self.path) == newest:
            return  # the usual case: no write lock taken
        import anyio

        if not in_transaction:
            await self.conn.execute(self.dialect.begin_write)
        try:
            if self.dialect is POSTGRESQL:  # BEGIN locks nothing: serialise migrations
                await self.conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
            await self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = await read_version(self._conn, self.path)
            check_version(self.path, current, read_only=False)
            for number, name, sql in known:
                if number <= current:
                    continue
                try:
                    for statement in statements(sql):
                        await self.conn.execute(statement)
                except StoreError as exc:
                    cause = str(exc).removeprefix(f"{self.path}: ")
                    raise StoreError(
                        f"{self.path}: migration {number:04d}_{name} failed: {cause}"
                    ) from None
                await self.conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", (number, name, utcnow())
                )
            if not in_transaction:
                await self.conn.execute("COMMIT")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._rollback()
            raise

    async def _rollback(self) -> None:
        """Roll back if a transaction is still open (SQLite ends some failed ones
        itself); a failing rollback never hides the error that caused it."""
        if self.conn.in_transaction:
            try:
                await self.conn.execute("ROLLBACK")
            except StoreError as exc:
                log.debug("%s: rollback failed: %s", self.path, exc)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A write transaction: all of it commits, or none of it."""
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only; this command cannot write")
        import anyio

        if self._write_lock is None:
            self._write_lock = anyio.Lock()
        async with self._write_lock:
            if self.damaged is not None:
                raise self.damaged
            if not self.dry_run:
                await self.conn.execute(self.dialect.begin_write)
                try:
                    yield self.conn
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await self._rollback()
                    raise
                with anyio.CancelScope(shield=True):
                    await self.conn.execute("COMMIT")
                return
            # A dry run: a savepoint in its one transaction, which close() rolls back.
            if not self.conn.in_transaction:  # or RELEASE would commit for real
                raise StoreError(f"{self.path}: the dry run's transaction was lost")
            await self.conn.execute("SAVEPOINT w")
            try:
                yield self.conn
            except BaseException:
                with anyio.CancelScope(shield=True):
                    if self.conn.in_transaction:
                        await self.conn.execute("ROLLBACK TO w")
                        await self.conn.execute("RELEASE w")
                raise
            with anyio.CancelScope(shield=True):
                await self.conn.execute("RELEASE w")

    def warn_clock_once(self, message: str) -> None:
        """Log that the clock went backwards, once per store (one run)."""
        if not self._clock_warned:
            self._clock_warned = True
            log.warning("%s", message)
