"""Numbered migrations applied to a database written by an older mirrorsync."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio

from dbstate import schema_at
from mirrorsync.store import Store


def test_stored_compilers_are_rewritten_in_the_current_notation(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    schema_at(db, 3)
    rows = [("a" * 32, "gcc@=11.4.0"), ("b" * 32, "llvm@=18.1.8"), ("c" * 32, None)]
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO specs (hash, name, version, platform, os, target, compiler, variants,"
            " first_seen) VALUES (?, 'zlib', '1.3', 'linux', 'rhel8', 'x86_64', ?, '[]', 'x')",
            rows,
        )

    async def reopen() -> None:
        store = await Store.open(db)
        await store.close()

    anyio.run(reopen)
    with sqlite3.connect(db) as conn:
        found = dict(conn.execute("SELECT hash, compiler FROM specs").fetchall())
    assert found == {"a" * 32: "gcc@11.4.0", "b" * 32: "llvm@18.1.8", "c" * 32: None}
