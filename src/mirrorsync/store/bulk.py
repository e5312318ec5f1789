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
    conn: Connection, stack_id: int, version: int, spec_ids: Sequence[int], written: Sequence[str]
) -> int:
    """Open the memberships of ``spec_ids`` and of the specs stored under the hashes
    ``written`` in the stack at ``version``; how many it opened."""
    if not conn.dialect.postgresql:
        await conn.executemany(
            "INSERT INTO memberships (stack_id, spec_id, entered, left) VALUES (?, ?, ?, NULL)",
            ((stack_id, spec_id, version) for spec_id in spec_ids),
        )
        count = len(spec_ids)
        for condition, params in hash_batches(conn, "hash", written):
            cursor = await conn.execute(
                "INSERT INTO memberships (stack_id, spec_id, entered, left) SELECT ?, id, ?, NULL"
                f" FROM specs WHERE {condition} ORDER BY id",  # appended in key order
                (stack_id, version, *params),
            )
            count += cursor.rowcount
        return count
    # One row of membership_groups (migration 0015) holds them all, their ids sorted.
    # The known ids go as one string split by the server (see hash_batches).
    known = " ".join(map(str, spec_ids))
    if written:
        condition, params = next(hash_batches(conn, "hash", written))
        ids = (
            f"SELECT unnest(CAST(string_to_array(CAST(? AS TEXT), ' ') AS INTEGER[]))"
            f" UNION ALL SELECT CAST(id AS INTEGER) FROM specs WHERE {condition}"
        )
    else:
        ids, params = "SELECT unnest(CAST(string_to_array(CAST(? AS TEXT), ' ') AS INTEGER[]))", []
    async with conn.execute(
        "INSERT INTO membership_groups (stack_id, entered, spec_ids)"
        f" SELECT ?, ?, array_agg(x.id ORDER BY x.id) FROM ({ids}) AS x(id)"
        " HAVING count(*) > 0 RETURNING cardinality(spec_ids)",
        (stack_id, version, known, *params),
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def close_memberships(
    conn: Connection, stack_id: int, version: int, hashes: Sequence[str]
) -> int:
    """Close the stack's open memberships of the specs stored under ``hashes`` at
    ``version``; how many it closed."""
    count = 0
    for condition, params in hash_batches(conn, "hash", hashes):
        if conn.dialect.postgresql:  # the open rows of membership_groups split (0015)
            async with conn.execute(
                "SELECT mirrorsync_close_memberships(?, ?,"
                f" ARRAY(SELECT CAST(id AS INTEGER) FROM specs WHERE {condition}))",
                (stack_id, version, *params),
            ) as cursor:
                row = await cursor.fetchone()
            count += int(row[0]) if row else 0
            continue
        cursor = await conn.execute(
            "UPDATE memberships SET left = ? WHERE stack_id = ? AND left IS NULL AND spec_id IN"
            f" (SELECT id FROM specs WHERE {condition})",
            (version, stack_id, *params),
        )
        count += cursor.rowcount
    return count
