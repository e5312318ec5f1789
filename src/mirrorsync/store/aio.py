"""The store's SQLite connection for the event loop: aiosqlite's, with mirrorsync's errors.

Imported when a database is opened through aiosqlite (``db._connect``), not with
the store: a command that reads without an event loop (store/readonly.py) never
pays for asyncio.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from mirrorsync.errors import DatabaseDamagedError, StoreError
from mirrorsync.store.dialect import SQLITE


class _Connection(aiosqlite.Connection):
    """aiosqlite's connection, whose every call into SQLite (statements, fetches,
    commits) raises mirrorsync's errors instead of sqlite3's.

    aiosqlite routes each of them, cursors' included, through ``_execute``: this is
    the one edge where a SQLite error is translated.
    """

    dialect = SQLITE

    def __init__(
        self,
        connector: Callable[[], sqlite3.Connection],
        path: Path | str,
        translate: Callable[[Path | str, sqlite3.Error], StoreError],
    ) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self.path = path
        self._translate = translate  # db.database_error (this module is below db)
        self.damaged: DatabaseDamagedError | None = None

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            error = self._translate(self.path, exc)
            if isinstance(error, DatabaseDamagedError) and self.damaged is None:
                self.damaged = error
            raise error from None
