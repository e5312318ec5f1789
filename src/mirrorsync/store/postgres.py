"""PostgreSQL behind the store's connection interface (psycopg 3, asyncio).

The store's SQL is written once, in the subset SQLite and PostgreSQL share, with
SQLite's placeholders (``?`` and ``:name``). :class:`PgConnection` is the one edge
where it becomes PostgreSQL's: each distinct statement is translated once
(cached) to psycopg's ``%s`` / ``%(name)s``, with the column ``left`` quoted (a
reserved word in PostgreSQL). SQLite runs the statements untouched, so its path
does no extra work.

Like the SQLite connection, it translates every driver error into mirrorsync's
(:func:`database_error`), naming the database by its URL with the credentials
masked. One connection per store, as with SQLite: statements from concurrent
tasks take turns on it (psycopg holds a lock per statement), and a write
transaction is serialised by the store itself.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Generator, Iterable, Sequence
from functools import lru_cache
from types import TracebackType
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg.conninfo import make_conninfo
from psycopg.postgres import types as pg_types

from mirrorsync.errors import (
    DatabaseDamagedError,
    DatabaseFullError,
    DatabaseUnavailableError,
    StoreError,
)
from mirrorsync.redact import one_line, scrub
from mirrorsync.store.dialect import POSTGRESQL
from mirrorsync.store.location import PostgresUrl

# Comments, string literals and quoted names pass untouched; ``::`` casts are not names.
_TOKEN_RE = re.compile(
    r"--[^\n]*"
    r"|/\*.*?\*/"
    r"|'(?:[^']|'')*'"
    r'|"[^"]*"'
    r"|::"
    r"|\?"
    r"|:(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|%"
    r"|\b(?P<left>left)\b(?!\s+(?:outer\s+)?join\b)",
    re.IGNORECASE | re.DOTALL,
)


@lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """The store's SQL as psycopg takes it: placeholders, ``%`` and ``left`` rewritten."""

    def replace(match: re.Match[str]) -> str:
        token = match[0]
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if match["name"]:
            return f"%({match['name']})s"
        if match["left"]:
            return '"left"'
        return token.replace("%", "%%")  # psycopg reads % inside literals too

    return _TOKEN_RE.sub(replace, sql)


class _BoolAsInt(Dumper):
    """Flags are INTEGER columns (0/1) in both dialects: a Python bool binds as one."""

    oid = pg_types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


# SQLSTATE classes and codes (PostgreSQL's appendix A).
_UNAVAILABLE_CLASSES = ("08", "57", "53")  # connection, operator intervention, resources
_FULL = ("53100",)  # disk_full
_DAMAGED = ("XX001", "XX002")  # data_corrupted, index_corrupted
_NO_SCHEMA = ("42P01", "42703")  # undefined_table, undefined_column


def database_error(where: PostgresUrl, exc: psycopg.Error) -> StoreError:
    """The one translation of a psycopg error into mirrorsync's, naming the database."""
    state = getattr(exc, "sqlstate", None) or ""
    detail = one_line(scrub(_message(exc)))
    error: StoreError
    if state in _FULL:
        error = DatabaseFullError(
            f"{where}: the database server's disk is full; the change was rolled back and"
            " nothing of it kept: free space on the server, then run again"
        )
    elif state in _DAMAGED:
        error = DatabaseDamagedError(
            f"{where}: the database is damaged ({detail}); check the server's log and"
            " restore the database from a backup"
        )
    elif state in _NO_SCHEMA:
        error = DatabaseDamagedError(f"{where}: the database's schema is damaged ({detail})")
    elif isinstance(exc, psycopg.OperationalError) and (
        not state or state[:2] in _UNAVAILABLE_CLASSES
    ):
        error = DatabaseUnavailableError(f"{where}: database server unavailable: {detail}")
    else:
        error = StoreError(f"{where}: {detail}")
    error.sqlite_error = None
    return error


def _message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return (primary or str(exc) or type(exc).__name__).strip()


# libpq's words for a server that answered but is not taking connections now.
_BUSY = (
    "starting up",
    "shutting down",
    "in recovery mode",
    "too many clients",
    "remaining connection slots",
)


def connect_error(where: PostgresUrl, exc: psycopg.Error) -> StoreError:
    """A connection that could not be made: the server unreachable or not accepting
    connections (DatabaseUnavailableError), or refusing this one (a wrong password,
    no such database or role: StoreError); libpq's words, without where it tried
    (the URL names that)."""
    text = str(exc).strip()
    text = re.sub(r"^connection failed: ", "", text)
    text = re.sub(r"connection to server (at|on) [^\n]*? failed: ", "", text)
    # libpq's lines are sentences without a full stop ("Connection refused\n\tIs the ..."):
    # joined into one line, each ends with one.
    text = re.sub(r"(?<![.:;?!])[ \t]*\n\s*(?=\S)", ". ", text.strip())
    text = one_line(scrub(text.replace("FATAL:  ", "")))
    refused_us = "FATAL:" in str(exc) and not any(word in text for word in _BUSY)
    if refused_us:
        return StoreError(f"{where}: cannot connect: {text}")
    return DatabaseUnavailableError(f"{where}: database server unavailable: {text}")


#: Rows joined into one piece of ``COPY`` text at a time.
_COPY_CHUNK = 10_000


def copy_text(rows: Sequence[tuple[Any, ...]], width: int) -> str | None:
    """``rows`` in ``COPY``'s text format, joined in C (psycopg's ``write_row`` is a
    Python call per row: ~0.25 s for 80,000), or None when a value needs escaping
    (a tab, newline, carriage return or backslash: then ``write_row`` escapes)."""
    if not rows:
        return ""
    nulls = sum(row.count(None) for row in rows)
    text = "\n".join(["\t".join(["\\N" if v is None else str(v) for v in row]) for row in rows])
    plain = (
        text.count("\t") == len(rows) * (width - 1)
        and text.count("\n") == len(rows) - 1
        and text.count("\\") == nulls  # each NULL's \N, no value's backslash
        and "\r" not in text
    )
    return text + "\n" if plain else None


class _Execution:
    """What ``execute`` returns, as aiosqlite's does: await it for the cursor, or
    ``async with`` it to have the cursor closed afterwards."""

    __slots__ = ("_conn", "_cursor", "_params", "_sql")

    def __init__(self, conn: PgConnection, sql: str, params: Any) -> None:
        self._conn, self._sql, self._params = conn, sql, params
        self._cursor: PgCursor | None = None

    def __await__(self) -> Generator[Any, None, PgCursor]:
        return self._conn._execute(self._sql, self._params).__await__()

    async def __aenter__(self) -> PgCursor:
        self._cursor = await self._conn._execute(self._sql, self._params)
        return self._cursor

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._cursor is not None:
            await self._cursor.close()


class PgCursor:
    """A psycopg cursor whose rows were all fetched by ``execute`` (client-side)."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: psycopg.AsyncCursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> Any:
        return await self._cursor.fetchone() if self._cursor.pgresult is not None else None

    async def fetchmany(self, size: int) -> list[Any]:
        return await self._cursor.fetchmany(size) if self._cursor.pgresult is not None else []

    async def fetchall(self) -> list[Any]:
        return await self._cursor.fetchall() if self._cursor.pgresult is not None else []

    async def __aiter__(self) -> AsyncIterator[Any]:
        for row in await self.fetchall():
            yield row

    async def close(self) -> None:
        await self._cursor.close()


class PgConnection:
    """The subset of aiosqlite's connection the store uses, on a psycopg connection."""

    dialect = POSTGRESQL

    def __init__(self, conn: psycopg.AsyncConnection[Any], where: PostgresUrl) -> None:
        self._pg = conn
        self.where = where
        self.damaged: DatabaseDamagedError | None = None
        conn.adapters.register_dumper(bool, _BoolAsInt)

    @classmethod
    async def connect(cls, where: PostgresUrl, *, read_only: bool = False) -> PgConnection:
        try:
            extra = {"password": where.password} if where.password is not None else {}
            if "connect_timeout=" not in where.url:  # a server that never answers is down
                extra["connect_timeout"] = str(CONNECT_TIMEOUT)
            conn = await psycopg.AsyncConnection.connect(
                make_conninfo(
                    where.url,
                    application_name=f"mirrorsync pid={os.getpid()}",  # who holds a lock
                    **extra,
                ),
                autocommit=True,  # the store issues BEGIN and COMMIT itself, as on SQLite
            )
        except psycopg.Error as exc:
            raise connect_error(where, exc) from None
        wrapped = cls(conn, where)
        try:
            # Timestamps are text in both dialects; the session's own zone never matters.
            await wrapped.execute("SET TIME ZONE 'UTC'")
            if read_only:
                await wrapped.execute("SET default_transaction_read_only = on")
        except BaseException:
            await wrapped.close()
            raise
        return wrapped

    @property
    def raw(self) -> psycopg.AsyncConnection[Any]:
        """psycopg's own connection, for what the interface above has no verb for
        (``COPY``, in store.transfer); its errors are the caller's to translate."""
        return self._pg

    @property
    def in_transaction(self) -> bool:
        return self._pg.pgconn.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> _Execution:
        return _Execution(self, sql, parameters)

    async def _execute(self, sql: str, params: Any) -> PgCursor:
        try:  # a cursor on a connection the server dropped fails too
            cursor = self._pg.cursor()
            await cursor.execute(translate(sql), params)
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return PgCursor(cursor)

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> PgCursor:
        try:  # a cursor on a connection the server dropped fails too
            cursor = self._pg.cursor()
            await cursor.executemany(translate(sql), parameters)
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return PgCursor(cursor)

    async def copy_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]
    ) -> None:
        """Load ``rows`` into ``table`` with one ``COPY ... FROM STDIN`` (bulk rows: one
        round trip per batch, not a statement per row). Names are the store's own;
        values are text, integers (not bools) or None."""
        try:
            await self._copy(table, columns, list(rows))
        except psycopg.Error as exc:
            raise self._error(exc) from None

    async def copy_new_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> bool:
        """As :meth:`copy_rows`, inside the open transaction, all or nothing: False,
        with nothing loaded, when a row would break a unique constraint (stored
        already, perhaps by another instance since this one looked)."""
        await self.execute("SAVEPOINT mirrorsync_copy")
        try:
            await self._copy(table, columns, rows)
        except psycopg.errors.UniqueViolation:
            await self.execute("ROLLBACK TO SAVEPOINT mirrorsync_copy")
            loaded = False
        except psycopg.Error as exc:
            raise self._error(exc) from None
        else:
            loaded = True
        await self.execute("RELEASE SAVEPOINT mirrorsync_copy")
        return loaded

    async def _copy(
        self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        async with self._pg.cursor() as cursor, cursor.copy(sql) as copy:
            for start in range(0, len(rows), _COPY_CHUNK):  # a few MB of text at most
                chunk = rows[start : start + _COPY_CHUNK]
                text = copy_text(chunk, len(columns))
                if text is not None:
                    await copy.write(text)
                    continue
                for row in chunk:
                    await copy.write_row(row)

    def _error(self, exc: psycopg.Error) -> StoreError:
        error = database_error(self.where, exc)
        if isinstance(error, DatabaseDamagedError) and self.damaged is None:
            self.damaged = error
        return error

    async def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            await self._pg.close()


#: Seconds to wait for a server to take a connection, unless the URL says
#: (``?connect_timeout=N``): past it the database is unavailable (exit 69).
CONNECT_TIMEOUT = 30


#: Key of the session-level advisory lock a run holds on a PostgreSQL database
#: (mirrorsync.lock): one run at a time per database, as the lock file gives SQLite.
RUN_LOCK_KEY = 0x6D69_7273_0000  # "mirs" 0


class AdvisoryLock:
    """A session-level advisory lock on its own connection, held until released
    or until the connection ends (a killed process's included: the server drops
    the session's locks with it)."""

    def __init__(self, where: PostgresUrl, key: int = RUN_LOCK_KEY) -> None:
        self.where = where
        self.key = key
        self._conn: PgConnection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def try_acquire(self) -> bool:
        """Take the lock if it is free (never waits)."""
        if self._conn is not None:
            return True
        conn = await PgConnection.connect(self.where)
        try:
            async with conn.execute("SELECT pg_try_advisory_lock(?)", (self.key,)) as cursor:
                row = await cursor.fetchone()
        except BaseException:
            await conn.close()
            raise
        if not (row and row[0]):
            await conn.close()
            return False
        self._conn = conn
        return True

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()  # the session's end drops its advisory locks

    async def holder(self) -> tuple[int | None, str | None]:
        """(PID, since) of the mirrorsync process holding the lock, as far as the
        server knows it (its application_name, its session's start)."""
        conn = await PgConnection.connect(self.where)
        try:
            async with conn.execute(
                "SELECT a.application_name, a.backend_start FROM pg_locks l"
                " JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND (l.classid::bigint << 32) + l.objid::bigint = ?",
                (self.key,),
            ) as cursor:
                row = await cursor.fetchone()
        finally:
            await conn.close()
        if row is None:
            return None, None
        match = re.search(r"pid=(\d+)", row[0] or "")
        since = row[1].strftime("%Y-%m-%dT%H:%M:%S.%fZ") if row[1] is not None else None
        return (int(match[1]) if match else None), since
