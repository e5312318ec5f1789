"""``mirrorsync db migrate-to``: a SQLite history copied whole into an empty PostgreSQL database.

Every table the migrations create is copied row for row, ids included (events
keep their ids, so ``events --since ID`` and webhook receivers carry on where
they were), then the target's sequences are set past the copied ids: past the
highest id SQLite ever handed out (``sqlite_sequence``), not only past the
highest still stored.

All of it is one PostgreSQL transaction: the schema (the same numbered
migrations ``once`` applies), every row, the sequences. A failure anywhere,
a kill included, leaves the target as it was: empty. The source is read in one
SQLite read transaction, under the run lock the caller holds, so no sync
writes it meanwhile and the copy is one consistent state.

A bulk load the way ``pg_restore`` does it: the tables are filled by ``COPY``
with their indexes, unique and foreign-key constraints set aside, and those are
rebuilt once at the end (a sorted build and one validating join each, instead
of a b-tree insertion and a lookup per row), all in the same transaction, so
nothing is ever committed without them.

SQLite's ``memberships`` (a row per membership) goes into PostgreSQL's
``membership_groups`` (migration 0015: a row per stack, entered and left
versions, the spec ids an array), where the view ``memberships`` shows the
same rows again.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psycopg

from mirrorsync.errors import StoreError, TargetNotEmptyError
from mirrorsync.store.db import Store
from mirrorsync.store.dialect import MIGRATION_LOCK_KEY, POSTGRESQL
from mirrorsync.store.location import PostgresUrl
from mirrorsync.store.postgres import PgConnection, database_error
from mirrorsync.store.schema import migrations

log = logging.getLogger("mirrorsync.store")

#: psycopg's connection under the store's (``PgConnection.raw``).
Pg = psycopg.AsyncConnection[Any]

#: Rows read from SQLite at a time (one thread hop of aiosqlite each).
BATCH = 5000

#: Tables SQLite keeps for itself, and the schema's own bookkeeping, which the
#: target's migrations write for themselves.
_NOT_COPIED = ("schema_migrations",)


@dataclass(frozen=True, slots=True)
class TableCopy:
    """One table copied: its name and how many rows."""

    name: str
    rows: int


@dataclass(slots=True)
class TransferReport:
    """What ``db migrate-to`` copied, table by table (in the order copied)."""

    source: str
    target: str  # the target's address, credentials masked
    tables: list[TableCopy] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)  # "table.column" -> last id
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "target": self.target,
            "tables": {t.name: t.rows for t in self.tables},
            "rows": self.rows,
            "sequences": dict(self.sequences),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class SourceTable:
    """A table of the SQLite history: its columns, in schema order."""

    name: str
    columns: tuple[str, ...]


async def migrate_to(source: Path, target: PostgresUrl) -> TransferReport:
    """Copy the SQLite history at ``source`` into the empty PostgreSQL database
    ``target``, in one transaction there; the caller holds ``source``'s run lock.

    :class:`~mirrorsync.errors.TargetNotEmptyError` if ``target`` already holds a
    mirrorsync history (or other tables); any other failure is a
    :class:`~mirrorsync.errors.StoreError` naming the table or step, and in every
    case the target is left as it was.
    """
    started = time.monotonic()
    report = TransferReport(str(source), str(target))
    async with await Store.open_read_only(source) as sqlite:
        conn = await PgConnection.connect(target)
        try:
            # One consistent state of the source: a read transaction for the whole copy.
            await sqlite.conn.execute("BEGIN")
            try:
                await _copy_in_one_transaction(sqlite, Store(conn, target), target, report)
            finally:
                with anyio.CancelScope(shield=True):
                    await sqlite.conn.execute("COMMIT")
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()
    report.seconds = time.monotonic() - started
    log.info(
        "copied %d rows of %d tables from %s to %s in %.1fs",
        report.rows,
        len(report.tables),
        source,
        target,
        report.seconds,
    )
    return report


async def _copy_in_one_transaction(
    sqlite: Store, store: Store, where: PostgresUrl, report: TransferReport
) -> None:
    conn = store.conn
    assert isinstance(conn, PgConnection)
    pg = conn.raw
    target = report.target
    step = "starting"
    try:
        await conn.execute(POSTGRESQL.begin_write)
        # Any mirrorsync migrating this database now waits for this transaction.
        await conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
        tables = await source_tables(sqlite)
        names = [t.name for t in tables]
        await _refuse_unless_empty(store, pg, names)
        step = "creating the schema"
        await store._migrate(in_transaction=True)  # the migrations `once` applies
        await _check_columns(pg, target, tables)
        step = "setting indexes and constraints aside"
        aside = await set_aside(pg, names)
        for table in tables:
            step = f"copying table {table.name}"
            report.tables.append(TableCopy(table.name, await copy_table(pg, sqlite, table)))
            log.debug("%s: copied %d rows of %s", target, report.tables[-1].rows, table.name)
        step = "rebuilding indexes and constraints"
        await restore(pg, aside)
        step = "setting the sequences past the copied ids"
        report.sequences = await advance_sequences(pg, names, await sequence_floors(sqlite))
        step = "analysing the tables"
        for name in names:
            await pg.execute(f"ANALYZE {_quote(name)}")
        step = "committing"
        await conn.execute("COMMIT")
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            if conn.in_transaction:
                try:
                    await conn.execute("ROLLBACK")
                except StoreError as lost:
                    log.debug("%s: rollback failed: %s", target, lost)
        if isinstance(exc, psycopg.Error):
            raise _failed(store, step, database_error(where, exc)) from None
        if isinstance(exc, StoreError) and not isinstance(exc, TargetNotEmptyError):
            raise _failed(store, step, exc) from None
        raise


def _failed(store: Store, step: str, error: StoreError) -> StoreError:
    """``error`` (a failure while doing ``step``), saying the target was left as it was."""
    cause = str(error).removeprefix(f"{store.path}: ")
    outcome = (
        "whether the copy was committed is unknown: look at the target before trying again"
        if step == "committing"
        else "nothing was written, the target is as it was"
    )
    failed = type(error)(f"{store.path}: cannot copy the history, {step}: {cause}; {outcome}")
    failed.sqlite_error = error.sqlite_error
    return failed


async def _refuse_unless_empty(store: Store, pg: Pg, names: Sequence[str]) -> None:
    """TargetNotEmptyError unless the target has no tables, or only an empty
    mirrorsync schema (one a mirrorsync opened and never synced into)."""
    present = await target_tables(pg)
    if not present:
        return
    if "schema_migrations" not in present:
        raise TargetNotEmptyError(
            f"{store.path}: the database holds tables that are not a mirrorsync schema "
            f"({', '.join(sorted(present)[:5])}{', ...' if len(present) > 5 else ''}); "
            "db migrate-to copies only into an empty database: nothing was written"
        )
    newest = migrations()[-1][0]
    rows = await _rows(pg, "SELECT coalesce(max(version), 0) FROM schema_migrations")
    version = int(rows[0][0]) if rows else 0
    held = {}
    for name in sorted(present & set(names)):
        found = await _rows(pg, f"SELECT count(*) FROM {_quote(name)}")
        if found and found[0][0]:
            held[name] = int(found[0][0])
    if held or version > newest:
        counts = ", ".join(
            f"{held[t]} {t}" for t in ("stacks", "events", "specs") if t in held
        ) or ", ".join(f"{n} {t}" for t, n in held.items())
        raise TargetNotEmptyError(
            f"{store.path}: already holds a mirrorsync history"
            + (f" ({counts})" if counts else f" (schema version {version})")
            + "; db migrate-to copies only into an empty database: nothing was written"
        )


async def _check_columns(pg: Pg, target: str, tables: Sequence[SourceTable]) -> None:
    """Every SQLite table and column has its namesake in the target's schema."""
    rows = await _rows(
        pg,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema()",
    )
    columns: dict[str, set[str]] = defaultdict(set)
    for table, column in rows:
        columns[str(table)].add(str(column))
    for table in tables:
        have = columns.get(table.name)
        missing = (
            table.name if have is None else next((c for c in table.columns if c not in have), None)
        )
        if missing is not None:
            where = table.name if have is None else f"{table.name}.{missing}"
            raise StoreError(f"{target}: the migrated schema lacks {where} of the SQLite history")


# -- the SQLite side -------------------------------------------------------------


async def source_tables(store: Store) -> list[SourceTable]:
    """Every table of the SQLite history, each after the tables it references.

    Ties keep the order the migrations created them in, so the copy reads as
    the schema does.
    """
    async with store.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY rowid"
    ) as cursor:
        names = [str(row[0]) for row in await cursor.fetchall() if row[0] not in _NOT_COPIED]
    columns: dict[str, tuple[str, ...]] = {}
    references: dict[str, set[str]] = defaultdict(set)
    for name in names:
        async with store.conn.execute(f"PRAGMA table_info({_quote(name)})") as cursor:
            columns[name] = tuple(str(row[1]) for row in await cursor.fetchall())
        async with store.conn.execute(f"PRAGMA foreign_key_list({_quote(name)})") as cursor:
            references[name] = {str(row[2]) for row in await cursor.fetchall()} - {name}
    ordered: list[str] = []
    pending = list(names)
    while pending:  # the first table, in schema order, whose references are all copied
        # (a cycle, which no migration makes, falls back to the schema's order)
        ready = next((n for n in pending if references[n] <= set(ordered)), pending[0])
        ordered.append(ready)
        pending.remove(ready)
    return [SourceTable(n, columns[n]) for n in ordered]


async def sequence_floors(store: Store) -> dict[str, int]:
    """Per AUTOINCREMENT table, the highest id SQLite ever handed out (deleted rows'
    too): the target's sequence must not hand one out again."""
    async with store.conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
    ) as cursor:
        row = await cursor.fetchone()
    if not row or not row[0]:
        return {}
    async with store.conn.execute("SELECT name, seq FROM sqlite_sequence") as cursor:
        return {str(name): int(seq) for name, seq in await cursor.fetchall()}


def _quote(name: str) -> str:
    """An identifier quoted the way both SQLite and PostgreSQL read it."""
    return '"' + name.replace('"', '""') + '"'


def _column_list(columns: Sequence[str]) -> str:
    return ", ".join(map(_quote, columns))


def _select(table: SourceTable) -> str:
    return f"SELECT {_column_list(table.columns)} FROM {_quote(table.name)}"


# -- the PostgreSQL side -----------------------------------------------------------

_NEXTVAL_RE = re.compile(r"nextval\('(?P<sequence>[^']+)'(::regclass)?\)")


@dataclass(frozen=True, slots=True)
class _SetAside:
    """The target's indexes and constraints on the copied tables, dropped for the load
    and rebuilt from their own definitions after it."""

    keys: list[tuple[str, str, str]]  # (table, constraint, definition): primary keys, unique
    indexes: list[str]  # CREATE INDEX statements
    foreign: list[tuple[str, str, str]]  # (table, constraint, definition)


async def _rows(pg: Pg, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    async with pg.cursor() as cursor:
        await cursor.execute(sql, params)
        return list(await cursor.fetchall())


async def target_tables(pg: Pg) -> set[str]:
    """The tables of the target's current schema."""
    rows = await _rows(pg, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {str(r[0]) for r in rows}


async def set_aside(pg: Pg, tables: Sequence[str]) -> _SetAside:
    """Drop the indexes and constraints of ``tables`` (inside the caller's transaction),
    returning what rebuilds them."""
    constraints = await _rows(
        pg,
        "SELECT r.relname, c.conname, c.contype, pg_get_constraintdef(c.oid)"
        " FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid"
        " JOIN pg_namespace n ON n.oid = r.relnamespace"
        " WHERE n.nspname = current_schema() AND c.contype IN ('p', 'u', 'f')"
        " AND r.relname = ANY(%s) ORDER BY c.oid",
        (list(tables),),
    )
    indexes = await _rows(
        pg,
        "SELECT t.relname, x.relname, pg_get_indexdef(i.indexrelid)"
        " FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid"
        " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = current_schema() AND t.relname = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid"
        " AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))"
        " ORDER BY i.indexrelid",
        (list(tables),),
    )
    aside = _SetAside(
        keys=[(str(t), str(n), str(d)) for t, n, kind, d in constraints if kind != "f"],
        indexes=[str(d) for _, _, d in indexes],
        foreign=[(str(t), str(n), str(d)) for t, n, kind, d in constraints if kind == "f"],
    )
    async with pg.cursor() as cursor:
        for table, name, _ in aside.foreign + aside.keys:
            await cursor.execute(f"ALTER TABLE {_quote(table)} DROP CONSTRAINT {_quote(name)}")
        for _, name, _ in indexes:
            await cursor.execute(f"DROP INDEX {_quote(str(name))}")
    return aside


async def restore(pg: Pg, aside: _SetAside) -> None:
    """Rebuild what :func:`set_aside` dropped: keys, then indexes, then foreign keys
    (each checked against every copied row as it is added)."""
    async with pg.cursor() as cursor:
        for table, name, definition in aside.keys:
            await cursor.execute(
                f"ALTER TABLE {_quote(table)} ADD CONSTRAINT {_quote(name)} {definition}"
            )
        for statement in aside.indexes:
            await cursor.execute(statement)
        for table, name, definition in aside.foreign:
            await cursor.execute(
                f"ALTER TABLE {_quote(table)} ADD CONSTRAINT {_quote(name)} {definition}"
            )


async def copy_table(pg: Pg, source: Store, table: SourceTable) -> int:
    """Every row of one SQLite table into its PostgreSQL namesake, by ``COPY``.

    Text format: PostgreSQL parses each value as its column's type (SQLite's
    bytes as ``bytea``), so no value needs converting here.
    """
    if table.name == "memberships":
        return await _copy_memberships(pg, source)
    copied = 0
    columns = _column_list(table.columns)
    async with pg.cursor() as cursor:
        statement = f"COPY {_quote(table.name)} ({columns}) FROM STDIN"
        async with cursor.copy(statement) as copy, source.conn.execute(_select(table)) as rows:
            while batch := await rows.fetchmany(BATCH):
                for row in batch:
                    await copy.write_row(row)
                    copied += 1
    return copied


async def _copy_memberships(pg: Pg, source: Store) -> int:
    """SQLite's memberships into membership_groups: those of one stack that entered
    and left at the same versions are one row, their spec ids ascending."""
    copied = 0
    select = (
        'SELECT stack_id, entered, "left", spec_id FROM memberships'
        ' ORDER BY stack_id, entered, "left", spec_id'
    )
    statement = 'COPY membership_groups (stack_id, entered, "left", spec_ids) FROM STDIN'
    group: tuple[Any, ...] | None = None
    ids: list[int] = []
    async with pg.cursor() as cursor:
        async with cursor.copy(statement) as copy, source.conn.execute(select) as rows:
            while batch := await rows.fetchmany(BATCH):
                for stack_id, entered, left, spec_id in batch:
                    if (stack_id, entered, left) != group:
                        if group is not None:
                            await copy.write_row((*group, ids))
                        group, ids = (stack_id, entered, left), []
                    ids.append(spec_id)
                    copied += 1
            if group is not None:
                await copy.write_row((*group, ids))
        await cursor.execute("ANALYZE membership_groups")
    return copied


async def advance_sequences(
    pg: Pg, tables: Sequence[str], floors: dict[str, int]
) -> dict[str, int]:
    """Set every sequence feeding a column of ``tables`` past the highest id copied
    into it (and past ``floors``: ids SQLite handed out, rows since deleted).

    Returns ``table.column`` -> the last id now taken, for the columns that had any.
    """
    feeding = await _rows(
        pg,
        "SELECT t.relname, a.attname, pg_get_serial_sequence(quote_ident(t.relname),"
        " a.attname), pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace"
        " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE n.nspname = current_schema() AND t.relname = ANY(%s)"
        " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY t.relname, a.attnum",
        (list(tables),),
    )
    advanced: dict[str, int] = {}
    async with pg.cursor() as cursor:
        for table, column, owned, default in feeding:
            sequence = owned
            if sequence is None and default is not None:
                match = _NEXTVAL_RE.search(str(default))
                sequence = match["sequence"] if match else None
            if sequence is None:
                continue
            await cursor.execute(f"SELECT max({_quote(str(column))}) FROM {_quote(str(table))}")
            row = await cursor.fetchone()
            highest = max(int(row[0]) if row and row[0] is not None else 0, floors.get(table, 0))
            if highest < 1:
                continue  # nothing copied: the sequence starts where it would have
            await cursor.execute("SELECT setval(%s::regclass, %s, true)", (sequence, highest))
            advanced[f"{table}.{column}"] = highest
    return advanced
