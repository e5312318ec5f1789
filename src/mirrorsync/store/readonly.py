"""A SQLite database read without an event loop: the same readers, the same SQL.

``mirrorsync status`` (and any command that only reads a few rows of a SQLite
file) pays for neither asyncio nor aiosqlite's thread: :func:`open_read_only`
opens the file as ``Store.open_read_only`` does (``mode=ro``, never migrated,
``immutable=1`` for a WAL database in a directory it cannot write, the schema
checked), on a connection whose every call runs at once in this thread.

The store's async readers (``overview.status``, ``mirrors.statuses``, ...) run on
it unchanged through :func:`run`: their coroutines never wait on anything, so
each finishes in one step. There is no second copy of a query, and every SQLite
error is translated by the one function that translates them
(``db.database_error``). PostgreSQL has no such path: its driver is async.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Coroutine, Generator, Iterable, Sequence

from mirrorsync.errors import DatabaseDamagedError, StoreError
from mirrorsync.location import PostgresUrl
from mirrorsync.store.db import (
    Store,
    _require_file,
    database_error,
)
from mirrorsync.store.dialect import SQLITE

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, TypeVar

    from mirrorsync.location import ReadLocation

    T = TypeVar("T")


class _Cursor:
    """aiosqlite's cursor interface over a sqlite3 cursor, every call done at once."""

    def __init__(self, conn: SyncConnection, cursor: sqlite3.Cursor) -> None:
        self._conn = conn
        self._cursor = cursor

    async def fetchall(self) -> list[Any]:
        return self._conn._call(self._cursor.fetchall)  # type: ignore[no-any-return]

    async def fetchone(self) -> Any:
        return self._conn._call(self._cursor.fetchone)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = size or self._cursor.arraysize
        return self._conn._call(self._cursor.fetchmany, size)  # type: ignore[no-any-return]

    def __aiter__(self) -> _Cursor:
        return self

    async def __anext__(self) -> Any:
        row = self._conn._call(self._cursor.fetchone)
        if row is None:
            raise StopAsyncIteration
        return row

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def close(self) -> None:
        self._cursor.close()

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._cursor.close()


class _Executed:
    """What ``execute`` returns, as aiosqlite's: awaited, or entered with ``async with``."""

    def __init__(self, cursor: _Cursor) -> None:
        self._cursor = cursor

    def __await__(self) -> Generator[Any, None, _Cursor]:
        return self._cursor
        yield  # a generator that never yields: awaiting it does not wait

    async def __aenter__(self) -> _Cursor:
        return self._cursor

    async def __aexit__(self, *exc_info: object) -> None:
        self._cursor._cursor.close()


class SyncConnection:
    """A read-only sqlite3 connection with the part of aiosqlite's interface the
    store's readers use; SQLite's errors become mirrorsync's, naming the file."""

    dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection, path: Path | str) -> None:
        self._sqlite = conn
        self.path = path
        self.damaged: DatabaseDamagedError | None = None

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            error = database_error(self.path, exc)
            if isinstance(error, DatabaseDamagedError) and self.damaged is None:
                self.damaged = error
            raise error from None

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> _Executed:
        cursor = self._call(self._sqlite.execute, sql, tuple(parameters or ()))
        return _Executed(_Cursor(self, cursor))

    async def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> list[Any]:
        cursor = self._call(self._sqlite.execute, sql, tuple(parameters or ()))
        return self._call(cursor.fetchall)  # type: ignore[no-any-return]

    async def close(self) -> None:
        self._sqlite.close()


class ReadStore(Store):
    """A store on a :class:`SyncConnection`: read-only, closed without an event loop."""

    async def close(self) -> None:
        await self.conn.close()
        if self.damaged is not None:
            raise self.damaged


async def opened(path: ReadLocation) -> Store:
    """:func:`open_read_only` where an opener of stores is awaited (``health.assessed``)."""
    if isinstance(path, PostgresUrl):
        raise TypeError(f"{path}: not a SQLite file; PostgreSQL is read through the event loop")
    return open_read_only(path)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (a reader on a :class:`SyncConnection`),
    run to its end in one step, with no event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a read on the synchronous store waited for something")


def _connect(path: Path | str, target: str) -> SyncConnection:
    _require_file(path)
    try:
        conn = sqlite3.connect(target, uri=True, isolation_level=None, timeout=10.0)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open database: {exc}") from None
    return SyncConnection(conn, path)


async def _connected(path: Path | str, target: str) -> SyncConnection:
    return _connect(path, target)


def open_read_only(path: Path | str) -> Store:
    """The SQLite database for a command that only reads, opened as
    ``Store.open_read_only`` opens it (the same code, the same errors), on a
    :class:`SyncConnection`. NoDatabaseError if there is none yet, SchemaError if
    its schema is not this mirrorsync's."""
    return run(ReadStore.open_file_read_only(path, _connected))
