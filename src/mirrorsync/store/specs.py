"""Specs: their columns and their record, a spec by hash or by hash prefix, and
what the crawl recorded of each (``SpecRecord``): a stack's specs now, one spec in
every stack."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from mirrorsync.records import record
from mirrorsync.store.db import Store
from mirrorsync.store.overview import name_filter

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any

    from mirrorsync.formats.index import SpecInfo

SPEC_COLUMNS = "s.hash, s.name, s.version, s.platform, s.os, s.target, s.compiler, s.variants"

#: Rows a streamed reader fetches at once: memory does not grow with the result.
PAGE = 500


def spec_from_row(row: Any) -> SpecInfo:
    """A SpecInfo from the eight columns of ``SPEC_COLUMNS``, in that order."""
    import json  # not for status either (start-up)

    from mirrorsync.formats.index import SpecInfo  # not for status: its msgspec structs

    hash_, name, version, platform, os, target, compiler, variants = row
    return SpecInfo(
        hash_, name, version, platform, os, target, compiler, tuple(json.loads(variants))
    )


async def spec(store: Store, spec_hash: str) -> SpecInfo | None:
    async with store.conn.execute(
        f"SELECT {SPEC_COLUMNS} FROM specs s WHERE s.hash = ?", (spec_hash,)
    ) as cursor:
        row = await cursor.fetchone()
    return spec_from_row(row) if row else None


async def specs_by_prefix(store: Store, prefix: str, *, limit: int = 10) -> list[SpecInfo]:
    """Specs whose hash starts with ``prefix`` (at most ``limit``), by hash."""
    # Hashes are lowercase base32 (a-z, 2-7); '{' sorts after 'z', so this is a range scan.
    async with store.conn.execute(
        f"SELECT {SPEC_COLUMNS} FROM specs s WHERE s.hash >= ? AND s.hash < ?"
        " ORDER BY s.hash LIMIT ?",
        (prefix, prefix + "{", limit),
    ) as cursor:
        return [spec_from_row(r) for r in await cursor.fetchall()]


@record(frozen=True, slots=True)
class SpecRecord:
    """A spec in a stack, with what its manifest said (sizes, checksums, status)."""

    hash: str
    name: str
    version: str
    source: str
    release: str
    stack: str
    manifest_status: str | None  # ok | missing | malformed | bad_signature | error; None: never
    problem: str | None
    tarball_size: int | None
    tarball_checksum: str | None  # "<algorithm>:<hex>"
    spec_checksum: str | None
    fetched_at: str | None
    current: bool  # the stack holds it now

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "release": self.release,
            "stack": self.stack,
            "manifest_status": self.manifest_status,
            "problem": self.problem,
            "tarball_size": self.tarball_size,
            "tarball_checksum": self.tarball_checksum,
            "spec_checksum": self.spec_checksum,
            "fetched_at": self.fetched_at,
            "current": self.current,
        }


_RECORD_COLUMNS = (
    "s.hash, s.name, s.version, src.name, st.release, st.name, sm.status, sm.problem,"
    " sm.tarball_size,"
    " CASE WHEN sm.tarball_checksum IS NULL THEN NULL"
    " ELSE sm.tarball_algorithm || ':' || sm.tarball_checksum END,"
    " CASE WHEN sm.spec_checksum IS NULL THEN NULL"
    " ELSE sm.spec_algorithm || ':' || sm.spec_checksum END,"
    " sm.fetched_at"
)


def _record(r: Any, *, current: bool) -> SpecRecord:
    """A SpecRecord from the twelve columns of ``_RECORD_COLUMNS``."""
    (hash_, name, version, source, release, stack, status, problem, size, tarball, spec, at) = r
    return SpecRecord(
        hash_,
        name,
        version,
        source,
        release,
        stack,
        status,
        problem,
        size,
        tarball,
        spec,
        at,
        current,
    )


async def stack_specs(
    store: Store, stack_id: int, *, package: str | None = None
) -> AsyncGenerator[SpecRecord, None]:
    """The specs a stack holds now, by name, version and hash, with their manifests; streamed."""
    sql = (
        # specs first, by name (its index): only each name's few rows are sorted.
        f"SELECT {_RECORD_COLUMNS} FROM specs s {store.dialect.ordered_join} memberships m"
        " ON s.id = m.spec_id"
        " JOIN stacks st ON st.id = m.stack_id JOIN sources src ON src.id = st.source_id"
        " LEFT JOIN spec_manifests sm ON sm.stack_id = m.stack_id AND sm.spec_id = m.spec_id"
        " WHERE m.stack_id = ? AND m.left IS NULL"
    )
    params: list[object] = [stack_id]
    if package is not None:
        condition, param = name_filter(store, "s.name", package)
        sql += f" AND {condition}"
        params.append(param)
    async with store.conn.execute(f"{sql} ORDER BY s.name, s.version, s.hash", params) as cursor:
        while rows := await cursor.fetchmany(PAGE):
            for r in rows:
                yield _record(r, current=True)


async def spec_records(store: Store, spec_hash: str) -> list[SpecRecord]:
    """What each stack's crawl recorded for one spec (stacks that never crawled it: none)."""
    async with store.conn.execute(
        f"SELECT {_RECORD_COLUMNS},"
        " EXISTS (SELECT 1 FROM memberships m WHERE m.stack_id = sm.stack_id"
        "  AND m.spec_id = sm.spec_id AND m.left IS NULL)"
        " FROM spec_manifests sm JOIN specs s ON s.id = sm.spec_id"
        " JOIN stacks st ON st.id = sm.stack_id JOIN sources src ON src.id = st.source_id"
        " WHERE s.hash = ? ORDER BY src.name, st.release, st.name",
        (spec_hash,),
    ) as cursor:
        return [_record(r[:-1], current=bool(r[-1])) for r in await cursor.fetchall()]
