"""The schema: the bundled numbered migrations, and a database's version checked
against them.

One numbered list for both dialects (``NNNN_name.sql``, and what a
``NNNN_name.postgresql.sql`` beside it adds); :class:`~mirrorsync.store.db.Store`
applies them in one write transaction, and every open checks the version a
database records: newer than this mirrorsync, older (read-only), or with a number
missing (another branch's) are each refused with one line naming the file. A check
reads the migrations' file names only (``status`` opens a database at every start).
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3

from mirrorsync.errors import DatabaseDamagedError, NoDatabaseError, SchemaError, StoreError
from mirrorsync.store.dialect import SQLITE, Dialect

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from importlib.resources.abc import Traversable
    from pathlib import Path

    from mirrorsync.location import ReadLocation
    from mirrorsync.store.db import Connection

_MIGRATION_RE = re.compile(
    r"^(?P<number>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<dialect>postgresql))?\.sql$"
)


def migrations(dialect: Dialect = SQLITE) -> list[tuple[int, str, str]]:
    """(number, name, sql) of every bundled migration, in order, in ``dialect``.

    One numbered list for both dialects. A migration's body is ``NNNN_name.sql``
    (written for SQLite, mapped by ``Dialect.migration``), followed by what a
    ``NNNN_name.<dialect>.sql`` beside it adds for that dialect only.
    """
    common: dict[tuple[int, str], str] = {}
    own: dict[tuple[int, str], str] = {}
    for entry in _migration_files():
        match = _MIGRATION_RE.match(entry.name)
        if not match:
            continue
        key = (int(match["number"]), match["name"])
        if match["dialect"] is None:
            common[key] = entry.read_text("utf-8")
        elif match["dialect"] == dialect.name:
            own[key] = entry.read_text("utf-8")
    return sorted(
        (number, name, dialect.migration(sql) + own.get((number, name), ""))
        for (number, name), sql in common.items()
    )


@functools.cache
def migration_names() -> list[tuple[int, str]]:
    """(number, name) of every bundled migration, in order: what a check of a
    database's version needs, from the files' names alone (none is read, no SQL
    mapped: opening a database for ``status`` checks its version). Listed once a
    process (an open checks the sequence and the version; the bundle never changes):
    the same list each time, not to be changed."""
    found = set()
    here = _migration_directory()
    names = os.listdir(here) if here else [entry.name for entry in _migration_files()]
    for name in names:
        match = _MIGRATION_RE.match(name)
        if match and match["dialect"] is None:
            found.add((int(match["number"]), match["name"]))
    return sorted(found)


def _migration_directory() -> str | None:
    """The bundled migrations' directory, when it is one on disk (every install;
    importlib.resources costs a tenth of ``status``'s start-up); else None (a zip)."""
    here = os.path.join(os.path.dirname(__file__), "migrations")
    return here if os.path.isdir(here) else None


def _migration_files() -> Iterable[Path | Traversable]:
    """The bundled migration files: in :func:`_migration_directory`, else what
    importlib.resources finds."""
    if here := _migration_directory():
        from pathlib import Path  # migrating: status only lists the names

        return Path(here).iterdir()
    from importlib import resources

    return resources.files("mirrorsync.store").joinpath("migrations").iterdir()


def statements(script: str) -> list[str]:
    """A migration script cut into statements, so they can run inside one transaction
    (``executescript`` would commit first)."""
    found, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    rest = "\n".join(ln for ln in pending.splitlines() if not ln.strip().startswith("--"))
    if rest.strip():
        raise StoreError(f"bundled migration ends in an incomplete statement: {rest.strip()!r}")
    return found


async def read_version(conn: Connection, path: ReadLocation) -> int:
    """The applied schema version: 0 for a database with no schema yet."""
    async with conn.execute(conn.dialect.tables_sql) as cursor:
        row = await cursor.fetchone()
    tables, has_migrations = (int(row[0]), int(row[1])) if row else (0, 0)
    if not has_migrations:
        if tables:
            raise DatabaseDamagedError(
                f"{path}: not a mirrorsync database, or its schema is damaged (no "
                "schema_migrations table); check the path, or restore it from a backup"
            )
        return 0
    async with conn.execute("SELECT version FROM schema_migrations ORDER BY version") as cursor:
        versions = [int(row[0]) for row in await cursor.fetchall()]
    _check_sequence(path, versions)
    return versions[-1] if versions else 0


def _check_sequence(path: ReadLocation, versions: list[int]) -> None:
    """Refuse a database whose recorded migrations skip a number (made by a side branch
    of mirrorsync, whose own migration took a number this one gives another): applying
    the later ones would leave a schema no version of mirrorsync can open. Nothing is
    written. A version newer than this mirrorsync's is left to :func:`check_version`."""
    known = migration_names()
    newest = known[-1][0] if known else 0
    if not versions or versions[-1] > newest:
        return
    missing = sorted(set(range(1, versions[-1] + 1)) - set(versions))
    if not missing:
        return
    names = dict(known)
    first = f"{missing[0]:04d}_{names.get(missing[0], '?')}"
    raise DatabaseDamagedError(
        f"{path}: the database records migrations up to {versions[-1]} but not {first}"
        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        + "; it was made by another branch of mirrorsync: open it with that one, or "
        "restore it from a backup (nothing was written)"
    )


def check_version(path: ReadLocation, current: int, *, read_only: bool) -> None:
    known = migration_names()  # the same numbers in every dialect
    newest = known[-1][0] if known else 0
    if current > newest:
        raise SchemaError(
            f"{path}: database schema version {current} is newer than this "
            f"mirrorsync understands ({newest}); upgrade mirrorsync"
        )
    if not read_only or current == newest:
        return
    if current == 0:
        raise NoDatabaseError(f"no database yet at {path}; run 'mirrorsync once' first")
    raise SchemaError(
        f"{path}: database schema version {current} is older than this mirrorsync's "
        f"({newest}); run 'mirrorsync once' to upgrade it"
    )
