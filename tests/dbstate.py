"""Read a mirrorsync database as plain data, to compare states and count events.

Every reader takes the database as ``config.database_path`` gives it: a SQLite
file (read with sqlite3, ``mode=ro``) or a PostgreSQL URL (read with psycopg,
the store's SQL translated as the store translates it), never through the store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from mirrorsync.store.location import Location, PostgresUrl
from mirrorsync.store.postgres import translate
from mirrorsync.store.schema import migrations

#: Specs gained (+) or lost (-) per stack from seed page 000 to seed page 001.
SEED_NET_CHANGE = {
    "e4s": 20,
    "root": -35,
    "ml-linux-aarch64-cpu": -9,
    "ml-linux-aarch64-cuda": -9,
    "ml-linux-x86_64-cpu": -12,
    "ml-linux-x86_64-cuda": -9,
    "ml-linux-x86_64-rocm": -6,
}


def net_by_stack(events: list[dict[str, object]]) -> dict[str, int]:
    """Per stack, spec.added minus spec.removed events."""
    net = Counter[str]()
    for e in events:
        if e["type"] == "spec.added":
            net[str(e["stack"])] += 1
        elif e["type"] == "spec.removed":
            net[str(e["stack"])] -= 1
    return dict(net)


class Reader:
    """One read-only connection to either kind of database: ``rows(sql, params)``."""

    def __init__(self, db: Location) -> None:
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None
        if isinstance(db, PostgresUrl):
            import psycopg

            self._pg = psycopg.connect(db.url, autocommit=True)
        else:
            self._sqlite = sqlite3.connect(f"file:{db}?mode=ro", uri=True)

    def rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            return [tuple(row) for row in self._sqlite.execute(sql, params)]
        return [tuple(row) for row in self._pg.execute(translate(sql), params).fetchall()]

    def one(self, sql: str, params: tuple[object, ...] = ()) -> tuple[Any, ...]:
        (row,) = self.rows(sql, params)
        return row

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        else:
            self._pg.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def select(db: Location, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows of one query (the store's SQL dialect: ``?`` placeholders) on ``db``."""
    with Reader(db) as reader:
        return reader.rows(sql, params)


_rows = select


def versions(db: Location) -> dict[tuple[str, str], int]:
    """(release, stack) -> current version."""
    return {
        (str(r), str(s)): int(v)
        for r, s, v in _rows(db, "SELECT release, name, version FROM stacks")
    }


def errors(db: Location) -> dict[tuple[str, str], str | None]:
    rows = _rows(db, "SELECT release, name, last_error FROM stacks")
    return {(str(r), str(s)): (None if e is None else str(e)) for r, s, e in rows}


def event_counts(db: Location) -> Counter[tuple[str, str, str | None]]:
    """(type, release, stack or None) -> how many events."""
    rows = _rows(
        db,
        "SELECT e.type, e.release, s.name FROM events e LEFT JOIN stacks s ON s.id = e.stack_id",
    )
    return Counter((str(t), str(r), None if s is None else str(s)) for t, r, s in rows)


# Everything a sync decides, without ids or times (which differ between runs).
# Events are compared as a multiset: (type, release, stack, hash, version) and how often.
_FACETS = {
    "stacks": "SELECT release, name, present, version, spec_count, index_checksum, layout,"
    " last_error FROM {db}.stacks",
    "versions": "SELECT st.release, st.name, v.version, v.index_checksum, v.spec_count, v.added,"
    " v.removed FROM {db}.stack_versions v JOIN {db}.stacks st ON st.id = v.stack_id",
    "memberships": "SELECT st.release, st.name, sp.hash, m.entered, m.left FROM {db}.memberships m"
    " JOIN {db}.stacks st ON st.id = m.stack_id JOIN {db}.specs sp ON sp.id = m.spec_id",
    "specs": "SELECT hash, name, version, platform, os, target, compiler, variants FROM {db}.specs",
    "releases": "SELECT name, present FROM {db}.releases",
    "events": "SELECT e.type, e.release, st.name, sp.hash, e.stack_version, count(*)"
    " FROM {db}.events e LEFT JOIN {db}.stacks st ON st.id = e.stack_id"
    " LEFT JOIN {db}.specs sp ON sp.id = e.spec_id GROUP BY 1, 2, 3, 4, 5",
}


def differences(a: Location, b: Location) -> dict[str, tuple[list[tuple[object, ...]], ...]]:
    """Per facet, a few rows only ``a`` has and a few only ``b`` has; empty when equal.

    Rows are compared as sets (as ``EXCEPT`` would), so ``a`` and ``b`` may be of
    different kinds: a SQLite file and a PostgreSQL database.
    """
    found: dict[str, tuple[list[tuple[object, ...]], ...]] = {}
    with Reader(a) as ra, Reader(b) as rb:
        for facet, sql in _FACETS.items():
            query = sql.replace("{db}.", "")
            rows_a, rows_b = set(ra.rows(query)), set(rb.rows(query))
            only_a = sorted(rows_a - rows_b, key=repr)[:5]
            only_b = sorted(rows_b - rows_a, key=repr)[:5]
            if only_a or only_b:
                found[facet] = (only_a, only_b)
    return found


def event_stats(db: Location) -> tuple[Counter[str], int]:
    """Events per type, and the most times any one event (type, stack, hash, version) occurs."""
    per_type = Counter(
        {str(t): int(n) for t, n in _rows(db, "SELECT type, count(*) FROM events GROUP BY type")}
    )
    (most,) = _rows(
        db,
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM events"
        " GROUP BY type, release, stack_id, spec_id, stack_version) AS per_event",
    )
    return per_type, int(most[0])


def check_consistent(db: Location) -> None:
    """No half-written version: every figure the store keeps agrees with the rows behind it."""
    with Reader(db) as conn:
        stacks = conn.rows("SELECT id, name, version, spec_count FROM stacks")
        for stack_id, name, version, spec_count in stacks:
            (open_members,) = conn.one(
                "SELECT count(*) FROM memberships WHERE stack_id = ? AND left IS NULL", (stack_id,)
            )
            assert open_members == spec_count, (name, open_members, spec_count)
            rows = conn.rows(
                "SELECT version, spec_count, added, removed FROM stack_versions"
                " WHERE stack_id = ? ORDER BY version",
                (stack_id,),
            )
            assert [r[0] for r in rows] == list(range(1, version + 1)), (name, rows, version)
            for v, count, added, removed in rows:
                (held,) = conn.one(
                    "SELECT count(*) FROM memberships WHERE stack_id = ? AND entered <= ?"
                    " AND (left IS NULL OR left > ?)",
                    (stack_id, v, v),
                )
                assert held == count, (name, v, held, count)
                for kind, expected in (("spec.added", added), ("spec.removed", removed)):
                    (n,) = conn.one(
                        "SELECT count(*) FROM events WHERE stack_id = ? AND stack_version = ?"
                        " AND type = ?",
                        (stack_id, v, kind),
                    )
                    assert n == expected, (name, v, kind, n, expected)


def schema_at(db: Path, version: int) -> None:
    """A database migrated only up to ``version``, as an older mirrorsync left it."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        for number, name, sql in migrations():
            if number <= version:
                conn.executescript(sql)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, '2026-01-01T00:00:00.000000Z')",
                    (number, name),
                )
        conn.commit()


def sqlite_file(db: Location) -> Path:
    """``db`` as the SQLite file a SQLite-only test reads directly."""
    assert isinstance(db, Path), f"a SQLite-only test was given {db}"
    return db
