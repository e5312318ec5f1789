"""Local copies of build caches: their published states, history and pending deletions.

Each public function that writes is one transaction. A published state's
version row, its member list and its ``mirror.updated`` event (with the
webhook outbox rows) are written together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from mirrorsync.records import record
from mirrorsync.redact import scrub
from mirrorsync.store import events
from mirrorsync.store.db import Connection, Store
from mirrorsync.store.overview import KEPT_COLUMNS as KEPT_COLUMNS
from mirrorsync.store.overview import Kept as Kept
from mirrorsync.store.overview import LeftOut as LeftOut
from mirrorsync.store.overview import MirrorStatus as MirrorStatus
from mirrorsync.store.overview import kept_by_copy as kept_by_copy
from mirrorsync.store.overview import left_out_by_copy as left_out_by_copy
from mirrorsync.store.overview import statuses as statuses
from mirrorsync.store.overview import wanted_missing_by_copy as wanted_missing_by_copy
from mirrorsync.text import bounded

UPDATED_EVENT = "mirror.updated"

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any


@record(frozen=True, slots=True)
class MirrorRow:
    id: int
    name: str
    source_id: int
    release: str
    version: int
    binaries: int
    bytes: int
    index_checksum: str | None
    plan_key: str | None


@record(frozen=True, slots=True)
class SyncedStack:
    """A stack of the copy's source as the last sync left it."""

    release: str
    name: str
    present: bool
    layout: str | None
    mirror_root: str | None
    index_checksum: str | None
    version: int
    id: int = 0


@record(frozen=True, slots=True)
class ManifestState:
    """What the crawl recorded for one spec manifest of a stack (the copy's evidence)."""

    status: str  # ok | missing | malformed | bad_signature | error
    problem: str | None
    manifest_sha256: str | None  # of the bytes the crawl read and verified
    signer: str | None  # primary key fingerprint gpg accepted; None: not checked


@record(frozen=True, slots=True)
class Published:
    """A new state of a copy, once its index is in place."""

    index_checksum: str
    binaries: frozenset[str]  # hashes with in_buildcache true in the index
    bytes: int
    plan_key: str


@record(frozen=True, slots=True)
class Recorded:
    version: int
    added: int
    removed: int
    event_id: int | None  # None: the state was the one already recorded


_COLUMNS = "id, name, source_id, release, version, binaries, bytes, index_checksum, plan_key"


async def source_id(store: Store, source: str) -> int | None:
    async with store.conn.execute("SELECT id FROM sources WHERE name = ?", (source,)) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else None


async def find(store: Store, name: str) -> MirrorRow | None:
    async with store.conn.execute(f"SELECT {_COLUMNS} FROM mirrors WHERE name = ?", (name,)) as c:
        row = await c.fetchone()
    return MirrorRow(*tuple(row)) if row else None


async def ensure(store: Store, name: str, path: str, source_id: int, release: str) -> MirrorRow:
    """The copy's row, created (version 0) if new; path, source and release follow the config."""
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO mirrors (name, path, source_id, release) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET path = excluded.path, forgotten_at = NULL,"
            " source_id = excluded.source_id, release = excluded.release",
            (name, path, source_id, release),
        )
        async with conn.execute(f"SELECT {_COLUMNS} FROM mirrors WHERE name = ?", (name,)) as c:
            row = await c.fetchone()
    assert row is not None
    return MirrorRow(*tuple(row))


async def synced_stacks(store: Store, source_id: int, release: str) -> list[SyncedStack]:
    async with store.conn.execute(
        "SELECT release, name, present, layout, mirror_root, index_checksum, version, id"
        " FROM stacks WHERE source_id = ? AND release = ? ORDER BY name",
        (source_id, release),
    ) as cursor:
        return [SyncedStack(r[0], r[1], bool(r[2]), *r[3:]) for r in await cursor.fetchall()]


async def manifest_states(
    store: Store, stack_ids: Iterable[int]
) -> dict[tuple[int, str], ManifestState]:
    """(stack id, spec hash) -> what the crawl recorded for the stack's current members."""
    out: dict[tuple[int, str], ManifestState] = {}
    for stack_id in stack_ids:
        async with store.conn.execute(
            "SELECT s.hash, sm.status, sm.problem, sm.manifest_sha256, sm.signer"
            " FROM spec_manifests sm JOIN specs s ON s.id = sm.spec_id"
            " WHERE sm.stack_id = ?",
            (stack_id,),
        ) as cursor:
            for row in await cursor.fetchall():
                out[(stack_id, str(row[0]))] = ManifestState(*tuple(row[1:]))
    return out


async def record_left_out(store: Store, mirror_id: int, left: Iterable[LeftOut]) -> None:
    """Make the copy's left-out specs exactly ``left`` (those of its last run)."""
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM mirror_left_out WHERE mirror_id = ?", (mirror_id,))
        await conn.executemany(
            "INSERT INTO mirror_left_out (mirror_id, hash, name, reason) VALUES (?, ?, ?, ?)",
            ((mirror_id, x.hash, x.name, x.reason) for x in left),
        )


async def left_out(store: Store, mirror_id: int) -> list[LeftOut]:
    """The specs the copy's last run left out (hash, name, reason), by name then hash."""
    async with store.conn.execute(
        "SELECT hash, name, reason FROM mirror_left_out WHERE mirror_id = ? ORDER BY name, hash",
        (mirror_id,),
    ) as cursor:
        return [LeftOut(*tuple(r)) for r in await cursor.fetchall()]


async def members(store: Store, mirror_id: int) -> set[str]:
    async with store.conn.execute(
        "SELECT hash FROM mirror_members WHERE mirror_id = ?", (mirror_id,)
    ) as cursor:
        return {str(r[0]) for r in await cursor.fetchall()}


async def record_published(
    store: Store,
    mirror: MirrorRow,
    published: Published,
    at: str,
    also: Callable[[Connection, int], Awaitable[None]] | None = None,
) -> Recorded:
    """Record the state whose index was just put in place: a version, members, an event.

    A state equal to the recorded one (a run killed between publishing and
    recording, then run again) only notes the check. ``also`` writes more in the
    same transaction (``bundle import``: its record), given the copy's version.
    """
    async with store.transaction() as conn:
        async with conn.execute(
            "SELECT version, index_checksum FROM mirrors WHERE id = ?", (mirror.id,)
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        version, checksum = int(row[0]), row[1]
        await conn.execute(
            "UPDATE mirrors SET last_checked = ?, last_error = NULL, last_error_at = NULL,"
            " plan_key = ? WHERE id = ?",
            (at, published.plan_key, mirror.id),
        )
        if checksum == published.index_checksum:
            if also is not None:
                await also(conn, version)
            return Recorded(version, 0, 0, None)
        async with conn.execute(
            "SELECT hash FROM mirror_members WHERE mirror_id = ?", (mirror.id,)
        ) as cursor:
            old = {str(r[0]) for r in await cursor.fetchall()}
        added = published.binaries - old
        removed = old - published.binaries
        version += 1
        # The one event writer: the event and its outbox rows, in this transaction.
        where = events.Where(mirror.source_id, mirror.release, None, version, at)
        await events.record(conn, UPDATED_EVENT, where)
        event_id = await _scalar(conn, "SELECT max(id) FROM event_rows", ())
        await conn.execute(
            "INSERT INTO mirror_versions (mirror_id, version, published_at, index_checksum,"
            " binaries, bytes, added, removed, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                mirror.id,
                version,
                at,
                published.index_checksum,
                len(published.binaries),
                published.bytes,
                len(added),
                len(removed),
                event_id,
            ),
        )
        await conn.executemany(
            "DELETE FROM mirror_members WHERE mirror_id = ? AND hash = ?",
            ((mirror.id, h) for h in removed),
        )
        await conn.executemany(
            "INSERT INTO mirror_members (mirror_id, hash) VALUES (?, ?)",
            ((mirror.id, h) for h in sorted(added)),
        )
        await conn.execute(
            "UPDATE mirrors SET version = ?, binaries = ?, bytes = ?, index_checksum = ?,"
            " last_published = ? WHERE id = ?",
            (
                version,
                len(published.binaries),
                published.bytes,
                published.index_checksum,
                at,
                mirror.id,
            ),
        )
        if also is not None:
            await also(conn, version)
    return Recorded(version, len(added), len(removed), event_id)


async def record_failure(store: Store, mirror_id: int, error: str, at: str) -> None:
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE mirrors SET last_error = ?, last_error_at = ?, last_checked = ? WHERE id = ?",
            (bounded(scrub(error)), at, at, mirror_id),
        )


async def note_orphans(
    store: Store, mirror_id: int, unreferenced: Iterable[str], at: str
) -> dict[str, str]:
    """Make the pending deletions exactly ``unreferenced``: new ones since ``at``, the
    others keep their time. Returns path -> since."""
    paths = set(unreferenced)
    async with store.transaction() as conn:
        async with conn.execute(
            "SELECT path, since FROM mirror_orphans WHERE mirror_id = ?", (mirror_id,)
        ) as cursor:
            known = {str(r[0]): str(r[1]) for r in await cursor.fetchall()}
        await conn.executemany(
            "DELETE FROM mirror_orphans WHERE mirror_id = ? AND path = ?",
            ((mirror_id, p) for p in known.keys() - paths),
        )
        new = sorted(paths - known.keys())
        await conn.executemany(
            "INSERT INTO mirror_orphans (mirror_id, path, since) VALUES (?, ?, ?)",
            ((mirror_id, p, at) for p in new),
        )
    return {p: known.get(p, at) for p in paths}


async def orphans(store: Store, mirror_id: int) -> dict[str, str]:
    async with store.conn.execute(
        "SELECT path, since FROM mirror_orphans WHERE mirror_id = ?", (mirror_id,)
    ) as cursor:
        return {str(r[0]): str(r[1]) for r in await cursor.fetchall()}


async def forget_orphans(store: Store, mirror_id: int, paths: Iterable[str]) -> None:
    """The files were deleted."""
    async with store.transaction() as conn:
        await conn.executemany(
            "DELETE FROM mirror_orphans WHERE mirror_id = ? AND path = ?",
            ((mirror_id, p) for p in paths),
        )


async def forget(store: Store, name: str, at: str) -> bool | None:
    """End the listing of a copy that left the configuration; its published states,
    kept specs and mirror.updated events stay. True if forgotten now, False if it
    was already, None if no copy has that name."""
    async with store.transaction() as conn:
        async with conn.execute("SELECT forgotten_at FROM mirrors WHERE name = ?", (name,)) as c:
            row = await c.fetchone()
        if row is None:
            return None
        if row[0] is not None:
            return False
        await conn.execute("UPDATE mirrors SET forgotten_at = ? WHERE name = ?", (at, name))
    return True


async def history(store: Store, name: str) -> list[dict[str, Any]]:
    """Every published state of a copy, oldest first."""
    async with store.conn.execute(
        "SELECT v.version, v.published_at, v.index_checksum, v.binaries, v.bytes, v.added,"
        " v.removed FROM mirror_versions v JOIN mirrors m ON m.id = v.mirror_id"
        " WHERE m.name = ? ORDER BY v.version",
        (name,),
    ) as cursor:
        keys = ("version", "published_at", "index_checksum", "binaries", "bytes", "added")
        return [
            dict(zip((*keys, "removed"), tuple(r), strict=True)) for r in await cursor.fetchall()
        ]


async def _scalar(conn: Any, sql: str, params: tuple[object, ...]) -> int:
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def kept(store: Store, mirror_id: int) -> dict[str, Kept]:
    """The specs the copy holds although upstream no longer lists them, by hash."""
    async with store.conn.execute(
        f"SELECT {KEPT_COLUMNS} FROM mirror_kept WHERE mirror_id = ?"
        " AND left_copy_at IS NULL AND back_upstream_at IS NULL",
        (mirror_id,),
    ) as cursor:
        return {str(r[0]): Kept(*tuple(r)) for r in await cursor.fetchall()}


async def kept_history(store: Store, name: str) -> list[dict[str, Any]]:
    """Every spec that left upstream while the copy held it: when it left upstream,
    when it left the copy, when upstream listed it again."""
    async with store.conn.execute(
        "SELECT k.hash, k.name, k.left_upstream_at, k.left_copy_at, k.back_upstream_at"
        " FROM mirror_kept k JOIN mirrors m ON m.id = k.mirror_id WHERE m.name = ?"
        " ORDER BY k.left_upstream_at, k.name, k.hash",
        (name,),
    ) as cursor:
        keys = ("hash", "name", "left_upstream_at", "left_copy_at", "back_upstream_at")
        return [dict(zip(keys, tuple(r), strict=True)) for r in await cursor.fetchall()]


async def record_kept(
    store: Store,
    mirror_id: int,
    left: Iterable[Kept],
    gone: Iterable[str],
    back: Iterable[str],
    at: str,
) -> None:
    """Specs that ``left`` upstream, kept ones the copy let go (``gone``) and kept
    ones upstream lists again (``back``), at ``at``: one transaction."""
    async with store.transaction() as conn:
        await conn.executemany(
            "INSERT INTO mirror_kept (mirror_id, hash, name, left_upstream_at, left_copy_at,"
            " stack_id, manifest_sha256, signer, record_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    mirror_id,
                    k.hash,
                    k.name,
                    k.left_upstream_at,
                    k.left_copy_at,
                    k.stack_id,
                    k.manifest_sha256,
                    k.signer,
                    k.record_json,
                )
                for k in left
            ),
        )
        for column, hashes in (("left_copy_at", gone), ("back_upstream_at", back)):
            await conn.executemany(
                f"UPDATE mirror_kept SET {column} = ? WHERE mirror_id = ? AND hash = ?"
                " AND left_copy_at IS NULL AND back_upstream_at IS NULL",
                ((at, mirror_id, h) for h in hashes),
            )


async def record_wanted_missing(
    store: Store, mirror_id: int, missing: Iterable[tuple[str, str]]
) -> None:
    """Make the copy's "wanted but not in upstream" exactly ``missing`` (hash, name)."""
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM mirror_wanted_missing WHERE mirror_id = ?", (mirror_id,))
        await conn.executemany(
            "INSERT INTO mirror_wanted_missing (mirror_id, hash, name) VALUES (?, ?, ?)",
            ((mirror_id, h, n) for h, n in missing),
        )


async def names(store: Store) -> list[str]:
    """Every mirror's name the database knows, forgotten ones included (``forget`` globs)."""
    async with store.conn.execute("SELECT name FROM mirrors ORDER BY name") as cursor:
        return [str(r[0]) for r in await cursor.fetchall()]
