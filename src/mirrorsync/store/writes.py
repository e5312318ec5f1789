"""What a sync writes: snapshots of stacks and their events.

Each public function is one transaction. A snapshot's memberships, version row
and events are written together, so a crash leaves either all of them or none.
URLs and messages are stored with their credentials masked (:mod:`mirrorsync.redact`).
The HTTP cache a sync keeps is in :mod:`mirrorsync.store.httpcache`, the
releases a source lists in :mod:`mirrorsync.store.releases`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mirrorsync.errors import FormatError, StaleSnapshotError, StoreError
from mirrorsync.formats.index import SpecInfo, SpecName
from mirrorsync.redact import redact_url, scrub
from mirrorsync.store import claims
from mirrorsync.store.bulk import (
    close_memberships,
    hash_batches,
    insert_specs,
    open_memberships,
)
from mirrorsync.store.claims import serialise
from mirrorsync.store.db import Connection, Store
from mirrorsync.store.events import Where, record
from mirrorsync.text import bounded


@dataclass(frozen=True, slots=True)
class StackRow:
    id: int
    source_id: int
    release: str
    name: str
    present: bool
    index_url: str | None
    mirror_root: str | None
    layout: str | None
    index_checksum: str | None
    version: int
    spec_count: int


@dataclass(frozen=True, slots=True)
class StackLocation:
    """Where a stack's index was found this time."""

    index_url: str
    mirror_root: str
    layout: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A new state of one stack, as the difference from its current version."""

    stack_id: int
    location: StackLocation | None
    index_checksum: str | None
    #: New to this stack: in full if new to the database, else by name (``stored_hashes``).
    added: Sequence[SpecInfo | SpecName]
    removed: Sequence[str]  # hashes
    announce: bool = False  # emit stack.added first
    retire: bool = False  # emit stack.removed last; the stack leaves the catalogue
    #: Every hash the index lists with in_buildcache false; None: as it was.
    uncached: frozenset[str] | None = None
    #: The version this difference was taken from; the commit refuses another.
    base_version: int | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    version: int  # the stack's version after the commit (unchanged if nothing changed)
    added: int
    removed: int
    events: int


_STACK_COLUMNS = (
    "id, source_id, release, name, present, index_url, mirror_root, layout,"
    " index_checksum, version, spec_count"
)


def _stack(row: Any) -> StackRow:
    r = tuple(row)
    return StackRow(r[0], r[1], r[2], r[3], bool(r[4]), *r[5:])


async def ensure_source(store: Store, name: str, kind: str, url: str) -> int:
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO sources (name, kind, url) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, url = excluded.url",
            (name, kind, redact_url(url)),
        )
        return await _scalar(conn, "SELECT id FROM sources WHERE name = ?", (name,))


async def ensure_stack(store: Store, source_id: int, release: str, name: str) -> StackRow:
    """The stack's row, created (version 0, not yet announced) if new."""
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO stacks (source_id, release, name) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (source_id, release, name),
        )
        async with conn.execute(
            f"SELECT {_STACK_COLUMNS} FROM stacks WHERE source_id = ? AND release = ? AND name = ?",
            (source_id, release, name),
        ) as cursor:
            row = await cursor.fetchone()
    assert row is not None
    return _stack(row)


async def stacks_of(store: Store, source_id: int) -> list[StackRow]:
    async with store.conn.execute(
        f"SELECT {_STACK_COLUMNS} FROM stacks WHERE source_id = ? ORDER BY release, name",
        (source_id,),
    ) as cursor:
        return [_stack(row) for row in await cursor.fetchall()]


async def current_hashes(store: Store, stack_id: int) -> set[str]:
    # One string split in C: 2.4x faster than a row per hash at 100,000 members.
    # Hashes are base32 (validated before they are stored), so never hold a space.
    async with store.conn.execute(
        f"SELECT {store.dialect.string_agg('s.hash', ' ')}"
        " FROM memberships m JOIN specs s ON s.id = m.spec_id"
        " WHERE m.stack_id = ? AND m.left IS NULL",
        (stack_id,),
    ) as cursor:
        row = await cursor.fetchone()
    return set(row[0].split(" ")) if row is not None and row[0] else set()


async def retire_stack(
    store: Store, stack_id: int, at: str, *, base_version: int | None = None
) -> Committed:
    """The source no longer lists the stack: close every membership it holds."""
    old = await current_hashes(store, stack_id)
    snapshot = Snapshot(
        stack_id, None, None, (), sorted(old), retire=True, base_version=base_version
    )
    return await commit_snapshot(store, snapshot, at)


async def commit_snapshot(store: Store, snapshot: Snapshot, at: str) -> Committed:
    """Write a stack's new version, its memberships and its events in one transaction."""
    seen: dict[str, tuple[int, str, str]] = {}  # spec rows known once this commits
    committed = await _commit_snapshot(store, snapshot, at, seen)
    store.known_specs.update(seen)
    return committed


async def _commit_snapshot(
    store: Store, snapshot: Snapshot, at: str, seen: dict[str, tuple[int, str, str]]
) -> Committed:
    async with store.transaction() as conn:
        await serialise(conn)  # before its new specs' rows are locked: see serialise()
        async with conn.execute(
            "SELECT s.version, s.spec_count, s.source_id, s.release FROM stacks s WHERE s.id = ?",
            (snapshot.stack_id,),
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None, f"stack {snapshot.stack_id} vanished"
        old_version, old_count, source_id, release = row
        if store.known_scope != (source_id, release):  # a cache per release: memory stays flat
            store.known_specs.clear()
            store.known_scope = (source_id, release)
        if snapshot.base_version is not None and old_version != snapshot.base_version:
            # Only the instance holding a stack's claim writes it; should a claim
            # ever be lost, the difference is still never applied to another state.
            raise StaleSnapshotError(
                f"stack {snapshot.stack_id}: version {old_version} was committed elsewhere"
                f" while this run diffed version {snapshot.base_version}; nothing of this"
                " change is kept, and the stack is synced again next run"
            )
        await _set_uncached(conn, snapshot)
        changed = bool(snapshot.added or snapshot.removed or snapshot.announce or snapshot.retire)
        if not changed:
            await _note_checked(conn, snapshot, at)
            return Committed(old_version, 0, 0, 0)

        version = old_version + 1
        await _check_clock(store, conn, snapshot.stack_id, version, at)
        where = Where(source_id, release, snapshot.stack_id, version, at)
        events = 0
        if snapshot.announce:
            events += await record(conn, "stack.added", where)
        added, n = await _add_members(conn, snapshot, version, at, where, store.known_specs, seen)
        events += n
        removed, n = await _remove_members(conn, snapshot, version, where)
        events += n
        if snapshot.retire:
            events += await record(conn, "stack.removed", where)
        spec_count = old_count + added - removed
        await conn.execute(
            "INSERT INTO stack_versions"
            " (stack_id, version, created_at, index_checksum, spec_count, added, removed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (snapshot.stack_id, version, at, snapshot.index_checksum, spec_count, added, removed),
        )
        await _update_stack(conn, snapshot, at, version=version, spec_count=spec_count)
        return Committed(version, added, removed, events)


async def record_unchanged(store: Store, snapshot: Snapshot, at: str) -> None:
    """The stack was checked and found as it was: note the time, clear any error."""
    async with store.transaction() as conn:
        await _note_checked(conn, snapshot, at)


async def record_failure(store: Store, stack_id: int, error: str, at: str) -> None:
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE stacks SET last_error = ?, last_error_at = ?, last_checked = ? WHERE id = ?",
            (bounded(scrub(error)), at, at, stack_id),
        )


# -- inside a transaction ------------------------------------------------------


async def stored_hashes(store: Store, hashes: Sequence[str]) -> set[str]:
    """Which of ``hashes`` the ``specs`` table holds already (stored by any stack,
    ever): a sync decodes only the others in full. Spec rows are never deleted, so
    those this run saw committed (``Store.known_specs``) are not looked up again."""
    wanted = set(hashes)
    found = wanted & store.known_specs.keys()  # set operations in C: ~500,000 per stack
    rest = list(wanted - found)  # any order: each batch is one lookup
    for condition, params in hash_batches(store.conn, "hash", rest):
        async with store.conn.execute(
            f"SELECT hash FROM specs WHERE {condition}", params
        ) as cursor:
            found.update(row[0] for row in await cursor.fetchall())
    return found


async def _add_members(
    conn: Connection,
    snapshot: Snapshot,
    version: int,
    at: str,
    where: Where,
    known: dict[str, tuple[int, str, str]],
    seen: dict[str, tuple[int, str, str]],
) -> tuple[int, int]:
    """Open the memberships of the added specs (stored first if new); (members, events).

    ``known``: spec rows seen committed before (hash -> id, name, version); the
    stored rows this transaction reads are put in ``seen``, to be known once it
    commits."""
    if not snapshot.added:
        return 0, 0
    variants_json: dict[tuple[str, ...], str] = {}

    def rows() -> Iterator[tuple[object, ...]]:
        for s in snapshot.added:
            if not isinstance(s, SpecInfo):  # stored already, by name
                continue
            text = variants_json.get(s.variants)
            if text is None:
                # Compact: ", " would cost a byte per variant of every stored spec.
                text = variants_json[s.variants] = json.dumps(
                    list(s.variants), separators=(",", ":")
                )
            yield (s.hash, s.name, s.version, s.platform, s.os, s.target, s.compiler, text, at)

    # Metadata is written once per hash, ever; a spec seen before keeps its row.
    new = [s for s in snapshot.added if isinstance(s, SpecInfo)]
    inserted = await insert_specs(conn, rows())
    # A hash names its content: a stored record must have the name and version
    # this snapshot gives it. Those stored before (by name, or in full when some
    # turned out to be stored already) are compared; a conflict refuses the index.
    # Rows known from earlier commits are compared in memory, the others as read
    # (and known from then on). Specs written just now are neither read nor
    # compared: SQLite finds their ids as it opens their memberships.
    # (A known row is stored, so a SpecInfo found known was not written now either.)
    all_new = inserted == len(new)
    ids: list[int] = []
    unknown: list[SpecInfo | SpecName] = []
    written: list[str] = []
    get = known.get
    for s in snapshot.added:
        row = get(s.hash)
        if row is None:
            if all_new and isinstance(s, SpecInfo):
                written.append(s.hash)
            else:
                unknown.append(s)
        elif row[1] == s.name and row[2] == s.version:
            ids.append(row[0])
        else:
            await _refuse_conflict(conn, snapshot)
    if unknown and not await _read_rows(conn, unknown, seen):
        await _refuse_conflict(conn, snapshot)
    ids.extend(seen[s.hash][0] for s in unknown if s.hash in seen)
    ids.sort()  # in key order: the stack's memberships are appended, not scattered
    count = await open_memberships(conn, snapshot.stack_id, version, ids, written)
    if count != len(snapshot.added):
        raise StoreError(
            f"{len(snapshot.added) - count} of the specs added to stack"
            f" {snapshot.stack_id} are not stored"
        )
    # One stored row: the events are the memberships this version opened, in hash order.
    events = await record(conn, "spec.added", where, span=count)
    return count, events


async def _read_rows(
    conn: Connection, specs: Sequence[SpecInfo | SpecName], seen: dict[str, tuple[int, str, str]]
) -> bool:
    """Read the stored rows of ``specs`` into ``seen``; whether every one is stored,
    and under the name and version it gives."""
    given = {s.hash: s for s in specs}
    hashes = list(given)
    found = 0
    for condition, params in hash_batches(conn, "hash", hashes):
        async with conn.execute(
            f"SELECT id, hash, name, version FROM specs WHERE {condition}", params
        ) as cursor:
            for spec_id, spec_hash, name, version in await cursor.fetchall():
                spec = given[spec_hash]
                if spec.name != name or spec.version != version:
                    return False
                seen[spec_hash] = (spec_id, name, version)
                found += 1
    return found == len(hashes)


async def _refuse_conflict(conn: Connection, snapshot: Snapshot) -> None:
    """The snapshot lists a stored hash under another name or version: a broken or
    hostile mirror. The first record stays; this stack's index is refused (the
    transaction rolls back), naming the hash, both records and the first stack."""
    added = {s.hash: s for s in snapshot.added}
    hashes = list(added)
    for start in range(0, len(hashes), 500):
        chunk = hashes[start : start + 500]
        async with conn.execute(
            "SELECT id, hash, name, version FROM specs"
            f" WHERE hash IN ({', '.join('?' * len(chunk))})",
            chunk,
        ) as cursor:
            for spec_id, spec_hash, name, version in await cursor.fetchall():
                new = added[spec_hash]
                if (name, version) == (new.name, new.version):
                    continue
                table, held_by = conn.dialect.memberships_of(":spec")
                async with conn.execute(
                    "SELECT src.name || ':' || st.release || '/' || st.name"
                    f" FROM {table} m JOIN stacks st ON st.id = m.stack_id"
                    " JOIN sources src ON src.id = st.source_id"
                    f" WHERE {held_by} ORDER BY st.id LIMIT 1",
                    {"spec": spec_id},
                ) as held:
                    first = await held.fetchone()
                origin = f" by {first[0]}" if first else ""
                location = snapshot.location
                raise FormatError(
                    "build cache index" if location is not None else "cache pages",
                    f"hash {spec_hash} is {new.name}@{new.version} here but was stored as"
                    f" {name}@{version}{origin}; a hash names its content, so one of the two"
                    " mirrors is broken or hostile: the first record is kept",
                    location.index_url if location is not None else None,
                )


async def _remove_members(
    conn: Connection, snapshot: Snapshot, version: int, where: Where
) -> tuple[int, int]:
    """Close the memberships of the removed hashes; (members, events)."""
    if not snapshot.removed:
        return 0, 0
    count = await close_memberships(conn, snapshot.stack_id, version, list(snapshot.removed))
    # One stored row: the events are the memberships this version closed, in hash order.
    events = await record(conn, "spec.removed", where, span=count)
    return count, events


async def _set_uncached(conn: Connection, snapshot: Snapshot) -> None:
    """Bring ``listed_uncached`` to the snapshot's set, writing only the difference."""
    if snapshot.retire:
        await conn.execute("DELETE FROM listed_uncached WHERE stack_id = ?", (snapshot.stack_id,))
        return
    if snapshot.uncached is None:
        return
    async with conn.execute(
        "SELECT hash FROM listed_uncached WHERE stack_id = ?", (snapshot.stack_id,)
    ) as cursor:
        old = {str(r[0]) for r in await cursor.fetchall()}
    new = snapshot.uncached
    await conn.executemany(
        "DELETE FROM listed_uncached WHERE stack_id = ? AND hash = ?",
        ((snapshot.stack_id, h) for h in sorted(old - new)),
    )
    await conn.executemany(
        "INSERT INTO listed_uncached (stack_id, hash) VALUES (?, ?)",
        ((snapshot.stack_id, h) for h in sorted(new - old)),
    )


async def _update_stack(
    conn: Connection, snapshot: Snapshot, at: str, *, version: int, spec_count: int
) -> None:
    await _note_checked(conn, snapshot, at)
    await conn.execute(
        "UPDATE stacks SET version = ?, spec_count = ?, present = ?, last_changed = ? WHERE id = ?",
        (version, spec_count, 0 if snapshot.retire else 1, at, snapshot.stack_id),
    )


async def _note_checked(conn: Connection, snapshot: Snapshot, at: str) -> None:
    location = snapshot.location
    await conn.execute(
        "UPDATE stacks SET last_checked = ?, last_error = NULL, last_error_at = NULL,"
        " index_checksum = coalesce(?, index_checksum),"
        " index_url = coalesce(?, index_url), mirror_root = coalesce(?, mirror_root),"
        " layout = coalesce(?, layout)"
        " WHERE id = ?",
        (
            at,
            snapshot.index_checksum,
            redact_url(location.index_url) if location else None,
            redact_url(location.mirror_root) if location else None,
            location.layout if location else None,
            snapshot.stack_id,
        ),
    )


async def _check_clock(
    store: Store, conn: Connection, stack_id: int, version: int, at: str
) -> None:
    """Warn (once a run) when a new version is dated before one already recorded."""
    async with conn.execute(
        "SELECT max(v.created_at), src.name || ':' || st.release || '/' || st.name"
        " FROM stacks st JOIN sources src ON src.id = st.source_id"
        " LEFT JOIN stack_versions v ON v.stack_id = st.id WHERE st.id = ?"
        " GROUP BY src.name, st.release, st.name",
        (stack_id,),
    ) as cursor:
        row = await cursor.fetchone()
    if row is not None and row[0] is not None and at < row[0]:
        store.warn_clock_once(
            f"the clock went backwards: {row[1]} version {version} is recorded at {at}, "
            f"before an earlier version's {row[0]}; dates in at, diff and show count each "
            "version from the latest time of those before it"
        )


async def _scalar(conn: Connection, sql: str, params: Sequence[object]) -> int:
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True, slots=True)
class StackClaim:
    """A stack claimed for this run (``row``, read after the claim), or why not (``skipped``)."""

    row: StackRow | None
    skipped: str | None = None


@asynccontextmanager
async def claim_stack(
    store: Store, source_id: int, release: str, name: str, *, mark: str | None
) -> AsyncIterator[StackClaim]:
    """Claim a stack for the body, the one way a run's stacks are synced or retired.

    Yields its row as the last holder left it, or, without it, why it is skipped:
    another instance holds it, or synced it since this run planned the source
    (``mark``: its ``last_checked`` then, from :func:`checked_marks`). A skipped
    stack is not a failure; it is done, or being done, by someone else.
    """
    row = await ensure_stack(store, source_id, release, name)
    async with claims.claim(store, claims.Kind.STACK, row.id) as holder:
        if holder is not None:
            yield StackClaim(None, f"another instance is syncing it ({holder})")
            return
        async with store.conn.execute(
            "SELECT last_checked, last_error FROM stacks WHERE id = ?", (row.id,)
        ) as cursor:
            found = await cursor.fetchone()
        checked, error = (found[0], found[1]) if found else (None, None)
        if checked is not None and checked != mark and error is None:
            yield StackClaim(None, f"another instance synced it during this run, at {checked}")
            return
        yield StackClaim(await ensure_stack(store, source_id, release, name))
