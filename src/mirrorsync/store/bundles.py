"""Bundles of a copy (``bundle export``/``bundle import``): what this site exported and
imported, and the copies it received.

A received copy has no configured source. Its ``mirrors`` row names a ``sources`` row
of kind ``bundle`` named ``bundle:ORIGIN`` (configured source names cannot hold
``:``), so its published states, history and ``mirror.updated`` events are those of
any copy, with the bundle's origin copy as their source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mirrorsync.store.db import Connection, Store
from mirrorsync.store.mirrors import MirrorRow

BUNDLE_SOURCE_KIND = "bundle"


def bundle_source(origin: str) -> str:
    """The ``sources`` name of the copies received from the copy ``origin``."""
    return f"bundle:{origin}"


@dataclass(frozen=True, slots=True)
class Received:
    """Where a received copy stands: the origin's version it holds, from which bundle."""

    origin: str | None  # None: the copy is made from a source (never a received one)
    origin_version: int  # 0: nothing imported yet
    manifest_sha256: str | None  # of the last bundle imported


_COLUMNS = "id, name, source_id, release, version, binaries, bytes, index_checksum, plan_key"


async def received(store: Store, name: str) -> tuple[MirrorRow | None, Received]:
    """The copy's row (None: no such copy yet) and what it received."""
    async with store.conn.execute(
        f"SELECT {_COLUMNS}, origin FROM mirrors WHERE name = ?", (name,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None, Received(None, 0, None)
    mirror = MirrorRow(*tuple(row)[:9])
    async with store.conn.execute(
        "SELECT to_version, manifest_sha256 FROM bundle_imports WHERE mirror_id = ?"
        " ORDER BY id DESC LIMIT 1",
        (mirror.id,),
    ) as cursor:
        last = await cursor.fetchone()
    if last is None:
        return mirror, Received(row[9], 0, None)
    return mirror, Received(row[9], int(last[0]), str(last[1]))


async def ensure_received(store: Store, name: str, path: str, origin: str) -> MirrorRow:
    """The received copy's row (created at version 0 if new), its source the origin's."""
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO sources (name, kind, url) VALUES (?, ?, '') ON CONFLICT (name) DO NOTHING",
            (bundle_source(origin), BUNDLE_SOURCE_KIND),
        )
        async with conn.execute(
            "SELECT id FROM sources WHERE name = ?", (bundle_source(origin),)
        ) as cursor:
            found = await cursor.fetchone()
        assert found is not None
        await conn.execute(
            "INSERT INTO mirrors (name, path, source_id, release, origin) VALUES (?, ?, ?, '', ?)"
            " ON CONFLICT (name) DO UPDATE SET path = excluded.path, forgotten_at = NULL,"
            " source_id = excluded.source_id, origin = excluded.origin",
            (name, path, int(found[0]), origin),
        )
        async with conn.execute(f"SELECT {_COLUMNS} FROM mirrors WHERE name = ?", (name,)) as c:
            row = await c.fetchone()
    assert row is not None
    return MirrorRow(*tuple(row))


@dataclass(frozen=True, slots=True)
class Imported:
    """One bundle imported, as recorded."""

    origin: str
    from_version: int
    to_version: int
    manifest_sha256: str
    at: str
    files: int
    bytes: int


async def record_import(conn: Connection, mirror_id: int, version: int, bundle: Imported) -> None:
    """In the transaction that records the copy's new published state (``version``)."""
    await conn.execute(
        "INSERT INTO bundle_imports (mirror_id, origin, from_version, to_version,"
        " manifest_sha256, version, imported_at, files, bytes)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            mirror_id,
            bundle.origin,
            bundle.from_version,
            bundle.to_version,
            bundle.manifest_sha256,
            version,
            bundle.at,
            bundle.files,
            bundle.bytes,
        ),
    )


async def record_export(
    store: Store,
    mirror_id: int,
    from_version: int,
    to_version: int,
    at: str,
    files: int,
    size: int,
    state: bytes,
) -> None:
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO bundle_exports (mirror_id, from_version, to_version, exported_at,"
            " files, bytes, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (mirror_id, from_version, to_version, at, files, size, state),
        )


async def last_exported(store: Store, mirror_id: int) -> int | None:
    """The newest version of the copy this site exported (None: never)."""
    async with store.conn.execute(
        "SELECT max(to_version) FROM bundle_exports WHERE mirror_id = ?", (mirror_id,)
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else None


async def exported_state(store: Store, mirror_id: int, version: int) -> bytes | None:
    """The state an export of ``version`` carried (compressed JSON), None if never exported."""
    async with store.conn.execute(
        "SELECT state FROM bundle_exports WHERE mirror_id = ? AND to_version = ?"
        " ORDER BY id DESC LIMIT 1",
        (mirror_id, version),
    ) as cursor:
        row = await cursor.fetchone()
    return bytes(row[0]) if row else None


async def version_checksum(store: Store, mirror_id: int, version: int) -> str | None:
    """The index checksum of the copy's published ``version`` (None: no such version)."""
    async with store.conn.execute(
        "SELECT index_checksum FROM mirror_versions WHERE mirror_id = ? AND version = ?",
        (mirror_id, version),
    ) as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row else None


async def history(store: Store) -> list[dict[str, Any]]:
    """Every bundle exported and imported here, oldest first."""
    out: list[dict[str, Any]] = []
    async with store.conn.execute(
        "SELECT m.name, b.from_version, b.to_version, b.exported_at, b.files, b.bytes"
        " FROM bundle_exports b JOIN mirrors m ON m.id = b.mirror_id ORDER BY b.id"
    ) as cursor:
        for name, since, to, at, files, size in await cursor.fetchall():
            out.append(
                {
                    "direction": "export",
                    "copy": name,
                    "origin": name,
                    "from": since,
                    "to": to,
                    "at": at,
                    "files": files,
                    "bytes": size,
                    "version": to,
                }
            )
    async with store.conn.execute(
        "SELECT m.name, b.origin, b.from_version, b.to_version, b.imported_at, b.files,"
        " b.bytes, b.version FROM bundle_imports b JOIN mirrors m ON m.id = b.mirror_id"
        " ORDER BY b.id"
    ) as cursor:
        for name, origin, since, to, at, files, size, version in await cursor.fetchall():
            out.append(
                {
                    "direction": "import",
                    "copy": name,
                    "origin": origin,
                    "from": since,
                    "to": to,
                    "at": at,
                    "files": files,
                    "bytes": size,
                    "version": version,
                }
            )
    out.sort(key=lambda r: str(r["at"]))
    return out
