"""The SQLite database: opening it safely, numbered migrations, transactions."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import aiosqlite
import anyio

from mirrorsync.errors import StoreError

_MIGRATION_RE = re.compile(r"^(?P<number>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


def utcnow() -> str:
    """Timestamps are ISO 8601 UTC with microseconds, so they sort as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every bundled migration, in order."""
    found = []
    for entry in resources.files("mirrorsync.store").joinpath("migrations").iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match:
            found.append((int(match["number"]), match["name"], entry.read_text("utf-8")))
    return sorted(found)


class Store:
    """One aiosqlite connection in WAL mode; write transactions are serialised."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = anyio.Lock()

    @classmethod
    async def open(cls, path: Path, *, create: bool = True) -> Store:
        if not create and not path.exists():  # noqa: ASYNC240 - one stat before opening
            raise StoreError(f"{path}: no database yet; run 'mirrorsync once' first")
        try:
            if create:
                # Directories it makes and the file itself are owner-only from the
                # first byte; SQLite gives -wal/-shm/-journal the database's mode.
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            conn = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, ValueError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open database: {exc}") from None
        store = cls(conn, path)
        try:
            await store._configure()
            await store._migrate()
        except sqlite3.Error as exc:
            await conn.close()
            raise StoreError(f"{path}: {exc}") from None
        except BaseException:
            await conn.close()
            raise
        return store

    async def copy_to(self, path: Path) -> None:
        """A consistent copy of the whole database (SQLite online backup), owner-only."""
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        async with aiosqlite.connect(path) as target:
            await self.conn.backup(target)

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _configure(self) -> None:
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",  # durable at checkpoints; WAL keeps commits atomic
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=10000",
            "PRAGMA temp_store=MEMORY",
        ):
            await self.conn.execute(pragma)

    async def _migrate(self) -> None:
        await self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with self.conn.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations"
        ) as c:
            row = await c.fetchone()
        current = int(row[0]) if row else 0
        known = migrations()
        newest = known[-1][0] if known else 0
        if current > newest:
            raise StoreError(
                f"{self.path}: database schema version {current} is newer than this "
                f"mirrorsync understands ({newest}); upgrade mirrorsync"
            )
        for number, name, sql in known:
            if number <= current:
                continue
            script = (
                f"BEGIN IMMEDIATE;\n{sql}\n"
                f"INSERT INTO schema_migrations VALUES ({number}, '{name}', '{utcnow()}');\n"
                "COMMIT;"
            )
            try:
                await self.conn.executescript(script)
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise StoreError(
                    f"{self.path}: migration {number:04d}_{name} failed: {exc}"
                ) from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: all of it commits, or none of it."""
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.conn.execute("ROLLBACK")
                raise
            with anyio.CancelScope(shield=True):
                await self.conn.execute("COMMIT")
