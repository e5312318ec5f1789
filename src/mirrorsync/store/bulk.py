"""Bulk rows the way each database takes them fastest (issue 31).

SQLite runs in this process: ``executemany`` and ``IN (...)`` lookups of a few
hundred values each cost no round trip. PostgreSQL is a server away: rows go in
with one ``COPY`` per batch, and a set of hashes is one array parameter of one
statement, so a stack's first sync is a handful of round trips, not one per
spec or per 500 of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from mirrorsync.store.db import Connection

#: Hashes per ``IN (...)`` lookup on SQLite: well within its parameter limit.
LOOKUP_CHUNK = 500

_SPEC_COLUMNS = (
    "hash",
    "name",
    "version",
    "platform",
    "os",
    "target",
    "compiler",
    "variants",
    "first_seen",
)
_INSERT_SPECS = (
    f"INSERT INTO specs ({', '.join(_SPEC_COLUMNS)}) VALUES ({', '.join('?' * len(_SPEC_COLUMNS))})"
    " ON CONFLICT (hash) DO NOTHING"
)
#: New spec rows on their way in (PostgreSQL): this session's, emptied before each load.
_STAGED = "mirrorsync_staged_specs"


def hash_batches(
    conn: Connection, column: str, hashes: Sequence[str]
) -> Iterator[tuple[str, list[object]]]:
    """(condition that ``column`` is one of a batch of ``hashes``, its parameters), for
    every batch: one on PostgreSQL (an array), chunks of ``LOOKUP_CHUNK`` on SQLite."""
    if not hashes:
        return
    if conn.dialect.postgresql:
        # A set joined, not "= ANY(array)": before ANALYZE has seen the new rows the
        # planner may scan the table and search the array for each of its rows.
        # Sent as one string split by the server: psycopg dumps a list of strings
        # element by element, each through a regular expression (0.4 s of client
        # CPU for 4 stacks of 20,000). Hashes are base32, so hold no space; should
        # one ever, the list goes as an array.
        joined = " ".join(hashes)
        if joined.count(" ") == len(hashes) - 1 and all(hashes):
            yield f"{column} IN (SELECT unnest(string_to_array(CAST(? AS TEXT), ' ')))", [joined]
        else:
            yield f"{column} IN (SELECT unnest(CAST(? AS TEXT[])))", [list(hashes)]
        return
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        chunk: list[object] = list(hashes[start : start + LOOKUP_CHUNK])
        yield f"{column} IN ({', '.join('?' * len(chunk))})", chunk


async def insert_specs(conn: Connection, rows: Iterable[tuple[object, ...]]) -> int:
    """Insert spec rows (the columns of ``_SPEC_COLUMNS``), in order, skipping hashes
    stored already; how many were inserted."""
    if not conn.dialect.postgresql:
        cursor = await conn.executemany(_INSERT_SPECS, rows)
        return max(cursor.rowcount, 0)
    from mirrorsync.store.postgres import PgConnection

    assert isinstance(conn, PgConnection)
    new = list(rows)
    if not new:
        return 0
    # The rows were looked up as new: straight into the table, unless one has been
    # stored since (then nothing of it is kept, and they go in through a staging table).
    if await conn.copy_new_rows("specs", _SPEC_COLUMNS, new):
        return len(new)
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGED}"
        f" ({''.join(f'{c} TEXT, ' for c in _SPEC_COLUMNS)}position BIGINT)"
    )
    await conn.execute(f"TRUNCATE {_STAGED}")
    await conn.copy_rows(
        _STAGED, (*_SPEC_COLUMNS, "position"), [(*row, n) for n, row in enumerate(new)]
    )
    cursor = await conn.execute(
        f"INSERT INTO specs ({', '.join(_SPEC_COLUMNS)})"
        f" SELECT {', '.join(_SPEC_COLUMNS)} FROM {_STAGED} ORDER BY position"
        " ON CONFLICT (hash) DO NOTHING"
    )
    return max(cursor.rowcount, 0)


async def open_memberships(
    conn: Connection, stack_id: int, version: int, spec_ids: Sequence[int]
) -> None:
    """Open the memberships of ``spec_ids`` in the stack at ``version``."""
    rows = ((stack_id, spec_id, version) for spec_id in spec_ids)
    if not conn.dialect.postgresql:
        await conn.executemany(
            "INSERT INTO memberships (stack_id, spec_id, entered, left) VALUES (?, ?, ?, NULL)",
            rows,
        )
        return
    from mirrorsync.store.postgres import PgConnection

    assert isinstance(conn, PgConnection)
    await conn.copy_rows("memberships", ("stack_id", "spec_id", "entered"), rows)
