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

from mirrorsync.errors import DatabaseFullError, StoreError

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
        self.dry_run = False  # every write inside one transaction that close() rolls back

    @classmethod
    async def open(cls, path: Path, *, create: bool = True, dry_run: bool = False) -> Store:
        """Open (and migrate) the database at ``path``; ``create`` it if missing.

        ``dry_run``: nothing is ever written to disk. An existing database gets
        one write transaction that :meth:`close` rolls back (transactions become
        savepoints in it); a database that does not exist yet is made in memory,
        so no file or directory is created.
        """
        exists = path.exists()  # noqa: ASYNC240 - one stat before opening
        if not create and not exists:
            raise StoreError(f"{path}: no database yet; run 'mirrorsync once' first")
        in_memory = dry_run and not exists
        try:
            if create and not dry_run:
                # Directories it makes and the file itself are owner-only from the
                # first byte; SQLite gives -wal/-shm/-journal the database's mode.
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            conn = await aiosqlite.connect(":memory:" if in_memory else path, isolation_level=None)
        except (OSError, ValueError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open database: {exc}") from None
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
        except sqlite3.Error as exc:
            await conn.close()
            raise store.error(exc) from None
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):  # a cancelled run still closes its database
            if self.dry_run and self.conn.in_transaction:
                await self.conn.execute("ROLLBACK")
            await self.conn.close()

    def error(self, exc: sqlite3.Error) -> StoreError:
        """SQLite's error as one line naming the database file (and what to do, if known)."""
        if "database or disk is full" in str(exc) or getattr(exc, "sqlite_errorcode", 0) == 13:
            return DatabaseFullError(
                f"{self.path}: database or disk is full; the change was rolled back and "
                f"nothing of it kept: free space on the file system of {self.path.parent} "
                "(or move the database elsewhere with 'database:'), then run again"
            )
        return StoreError(f"{self.path}: {exc}")

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

    async def _migrate(self, *, in_transaction: bool = False) -> None:
        """Apply the migrations this database lacks, each in a transaction of its own
        (``in_transaction``: statement by statement, in the one already open)."""
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
            if in_transaction:  # executescript() would commit it
                for statement in _statements(sql):
                    await self.conn.execute(statement)
                await self.conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", (number, name, utcnow())
                )
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
        rollback: tuple[str, ...]
        async with self._write_lock:
            if self.dry_run:  # a savepoint in the dry run's one transaction
                if not self.conn.in_transaction:  # or RELEASE would commit for real
                    raise StoreError(f"{self.path}: the dry run's transaction was lost")
                begin, commit, rollback = "SAVEPOINT w", "RELEASE w", ("ROLLBACK TO w", "RELEASE w")
            else:
                begin, commit, rollback = "BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",)
            try:
                await self.conn.execute(begin)
                try:
                    yield self.conn
                    with anyio.CancelScope(shield=True):
                        await self.conn.execute(commit)
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        # SQLite may have rolled back already (e.g. on a full disk);
                        # a second ROLLBACK would fail and hide why.
                        if self.conn.in_transaction:
                            for statement in rollback:
                                await self.conn.execute(statement)
                    raise
            except sqlite3.Error as exc:
                raise self.error(exc) from None


def _statements(script: str) -> list[str]:
    """The SQL statements of ``script``, one by one (triggers' bodies kept whole)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in current.splitlines()
    ):
        statements.append(current.strip())
    return statements
