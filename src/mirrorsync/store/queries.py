"""A stack's history: its versions, the version current at a point in time, what it
held at one, what changed between two, and a spec's stays in every stack.

The other readers have modules of their own: ``overview`` (what ``status`` reads),
``names`` (stacks by name), ``specs`` (specs and their manifests), ``eventlog`` (the
change log), ``instants`` (points in time). ``status`` and ``StackStatus`` are still
exported here, as they always were; so are ``events``, ``find_stack`` and ``spec``, which
the tests of a sync read through ``queries``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from mirrorsync.errors import UsageError
from mirrorsync.records import record
from mirrorsync.store.db import Store
from mirrorsync.store.instants import instant, is_version
from mirrorsync.store.specs import PAGE, SPEC_COLUMNS, spec_from_row

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from mirrorsync.formats.index import SpecInfo


@record(frozen=True, slots=True)
class VersionRow:
    version: int
    created_at: str
    spec_count: int
    added: int
    removed: int
    index_checksum: str | None


@record(frozen=True, slots=True)
class Diff:
    from_version: int
    to_version: int
    added: list[SpecInfo]
    removed: list[SpecInfo]


@record(frozen=True, slots=True)
class Interval:
    source: str
    release: str
    stack: str
    entered_version: int
    entered_at: str
    left_version: int | None
    left_at: str | None


async def first_version_at(store: Store, stack_id: int) -> str | None:
    """When a stack's history begins: the time of its first version (None: no version)."""
    async with store.conn.execute(
        "SELECT min(created_at) FROM stack_versions WHERE stack_id = ?", (stack_id,)
    ) as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row and row[0] is not None else None


async def history(store: Store, stack_id: int) -> list[VersionRow]:
    return [row async for row in history_rows(store, stack_id)]


async def history_rows(
    store: Store, stack_id: int, *, limit: int | None = None
) -> AsyncGenerator[VersionRow, None]:
    """A stack's versions in order, streamed; with ``limit``, only the newest ``limit``."""
    sql = (
        "SELECT version, created_at, spec_count, added, removed, index_checksum"
        " FROM stack_versions WHERE stack_id = ?"
    )
    params: list[object] = [stack_id]
    if limit is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY version DESC LIMIT ?)"
        params.append(limit)
    # Streams read a page of rows at a time (memory does not grow with the result),
    # directly in the generator, so closing it early closes the cursor at once.
    async with store.conn.execute(f"{sql} ORDER BY version", params) as cursor:
        while rows := await cursor.fetchmany(PAGE):
            for r in rows:
                yield VersionRow(*r)


async def resolve_version(store: Store, stack_id: int, when: str) -> int:
    """A version number, or the version current at an ISO date/time (0 = before the first).

    A bare date (``2026-11-01``) means the end of that day, UTC. A version's time
    is the latest recorded for it or any earlier version (see ``EFFECTIVE_AT``).
    """
    async with store.conn.execute(
        "SELECT coalesce(max(version), 0) FROM stack_versions WHERE stack_id = ?", (stack_id,)
    ) as cursor:
        row = await cursor.fetchone()
    latest = int(row[0]) if row else 0
    if is_version(when):
        version = int(when.removeprefix("v"))
        if version > latest:
            raise UsageError(f"version {version} does not exist (latest is {latest})")
        return version
    moment = instant(when)
    # Versions are ordered by number, whatever the clock said: a version counts from
    # the latest time recorded for it or any version before it (the clock may have
    # been set back between runs), so the answer is the version before the first
    # one recorded after the instant, never one older than a version already then.
    async with store.conn.execute(
        "SELECT min(version) FROM stack_versions WHERE stack_id = ? AND created_at > ?",
        (stack_id, moment),
    ) as cursor:
        row = await cursor.fetchone()
    return latest if row is None or row[0] is None else int(row[0]) - 1


_AT_VERSION = "m.entered <= :v AND (m.left IS NULL OR m.left > :v)"


async def members_at(store: Store, stack_id: int, version: int) -> list[SpecInfo]:
    """Every spec the stack held at ``version``, by hash."""
    return [s async for s in stream_members_at(store, stack_id, version)]


async def stream_members_at(
    store: Store, stack_id: int, version: int
) -> AsyncGenerator[SpecInfo, None]:
    """Every spec the stack held at ``version``, by hash, streamed."""
    # CROSS JOIN: walk specs in hash order (its index), so SQLite never sorts the
    # whole result in memory; each spec's stay in the stack is an index lookup.
    async with store.conn.execute(
        f"SELECT {SPEC_COLUMNS} FROM specs s {store.dialect.ordered_join} memberships m"
        f" ON s.id = m.spec_id WHERE m.stack_id = :stack AND {_AT_VERSION} ORDER BY s.hash",
        {"stack": stack_id, "v": version},
    ) as cursor:
        while rows := await cursor.fetchmany(PAGE):
            for r in rows:
                yield spec_from_row(r)


async def count_at(store: Store, stack_id: int, version: int) -> int:
    """How many specs the stack held at ``version``."""
    async with store.conn.execute(
        f"SELECT count(*) FROM memberships m WHERE m.stack_id = :stack AND {_AT_VERSION}",
        {"stack": stack_id, "v": version},
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def diff(store: Store, stack_id: int, from_version: int, to_version: int) -> Diff:
    """Specs held at ``to_version`` but not ``from_version`` (added), and the reverse."""

    async def only_in(a: int, b: int) -> list[SpecInfo]:
        async with store.conn.execute(
            f"SELECT {SPEC_COLUMNS} FROM specs s WHERE s.id IN ("
            " SELECT m.spec_id FROM memberships m WHERE m.stack_id = :stack"
            " AND m.entered <= :a AND (m.left IS NULL OR m.left > :a)"
            " EXCEPT SELECT m.spec_id FROM memberships m WHERE m.stack_id = :stack"
            " AND m.entered <= :b AND (m.left IS NULL OR m.left > :b))"
            " ORDER BY s.name, s.version, s.hash",
            {"stack": stack_id, "a": a, "b": b},
        ) as cursor:
            return [spec_from_row(r) for r in await cursor.fetchall()]

    return Diff(
        from_version,
        to_version,
        added=await only_in(to_version, from_version),
        removed=await only_in(from_version, to_version),
    )


#: When stack version ``{v}`` of stack ``{stack}`` counts from: the latest time recorded
#: for it or any version before it, so times never run against version order.
EFFECTIVE_AT = (
    "(SELECT max(v.created_at) FROM stack_versions v"
    " WHERE v.stack_id = {stack} AND v.version <= {v})"
)


async def intervals(store: Store, spec_hash: str) -> list[Interval]:
    """Every stay of a spec in any stack: when it came and when it went."""
    entered_at = EFFECTIVE_AT.format(stack="m.stack_id", v="m.entered")
    left_at = EFFECTIVE_AT.format(stack="m.stack_id", v="m.left")
    table, held = store.dialect.memberships_of("s.id")
    async with store.conn.execute(
        f"SELECT src.name, st.release, st.name, m.entered, {entered_at}, m.left,"
        f" CASE WHEN m.left IS NULL THEN NULL ELSE {left_at} END"
        f" FROM specs s JOIN {table} m ON {held}"
        " JOIN stacks st ON st.id = m.stack_id JOIN sources src ON src.id = st.source_id"
        " WHERE s.hash = ? ORDER BY src.name, st.release, st.name, m.entered",
        (spec_hash,),
    ) as cursor:
        return [Interval(*r) for r in await cursor.fetchall()]
