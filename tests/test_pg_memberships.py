"""PostgreSQL's memberships after migrations 0013 and 0015 (issue 31): their size
beside SQLite's, the references still refused without per-row foreign keys, and
the upgrade of a database made by the landed version (0013's; 0015's is
test_grouped_memberships.py). Sizes and errors, not timings.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from conftest import REPO, catalog_config_text, json_lines, run_cli
from landed import cli, landed_source, pending_hooks
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import synthetic_compilers, synthetic_specs
from mirrorsync.location import PostgresUrl
from mirrorsync.store import Store
from postgres import PostgresServer
from receiver import Receiver, new_secret

#: The last commit of main before migration 0013: the "landed version" whose
#: PostgreSQL databases the migration converts.
LANDED = "6442e9eb3e6aaaae52b1e1e5e7f1a30f950ed5df"

#: PostgreSQL's bytes per membership beyond an empty database, at most this times
#: SQLite's in the same case: issue 31's target. 0013 brought it from 1.94x to 1.69x
#: in the case below; 0014 then made SQLite's membership 12 bytes smaller (one
#: index fewer), which put it at 1.77x; 0015 stores a stack's memberships of the
#: same entered and left versions as one row with an array of spec ids (no heap
#: row, primary-key entry and memberships_by_spec entry per membership): 1.28x.
#: What is left is the specs: a heap row header per spec and a unique index on
#: their hashes filled ~65% by inserts in hash-random order.
SIZE_RATIO = 1.3


def _empty_pg_size(server: PostgresServer) -> int:
    url = server.url(server.new_database())

    async def create() -> None:
        store = await Store.open(PostgresUrl(url))  # every migration, no history
        await store.close()

    anyio.run(create)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


def test_postgresql_stores_a_membership_in_at_most_1_3x_sqlite_s_bytes(
    tmp_path: Path,
    docroot: Path,
    server: FixtureServer,
    postgres_server: PostgresServer,
    postgres_url: str,
) -> None:
    # bench_scale's table case at a quarter of its size: 4 stacks of 5,000 specs,
    # 2,000 of them shared by all, fixture records; growth beyond an empty database
    # (PostgreSQL's empty one is ~8 MB of catalogue, SQLite's a few pages).
    shared, own = 2_000, 3_000
    pool = synthetic_specs(shared + 4 * own, seed=7)
    stacks = {
        ("root" if k == 0 else f"s{k}"): pool[:shared]
        + pool[shared + k * own : shared + (k + 1) * own]
        for k in range(4)
    }
    uncached = {"t": {label: synthetic_compilers() for label in stacks}}
    build_catalog_from_specs(
        docroot, {"t": stacks}, manifests=False, signed=False, uncached=uncached
    )
    grown: dict[str, float] = {}
    for name, database in (("sqlite", str(tmp_path / "state.db")), ("pg", postgres_url)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            catalog_config_text(tmp_path, server, extra="    manifests: none").replace(
                f"database: {tmp_path / 'state.db'}", f"database: '{database}'"
            )
        )
        config.chmod(0o600)  # the URL holds a password
        done = run_cli("-c", str(config), "once", cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
    empty = tmp_path / "empty.db"

    async def create() -> None:
        store = await Store.open(empty)
        await store.close()

    anyio.run(create)
    with sqlite3.connect(tmp_path / "state.db") as conn:
        (members,) = conn.execute("SELECT count(*) FROM memberships").fetchone()
    assert members == 4 * (shared + own)
    grown["sqlite"] = (tmp_path / "state.db").stat().st_size - empty.stat().st_size
    with psycopg.connect(postgres_url) as pg:
        row = pg.execute(
            "SELECT pg_database_size(current_database()), (SELECT count(*) FROM memberships)"
        ).fetchone()
    assert row is not None and row[1] == members
    grown["pg"] = int(row[0]) - _empty_pg_size(postgres_server)
    ratio = grown["pg"] / grown["sqlite"]
    print(
        f"bytes per membership: SQLite {grown['sqlite'] / members:.0f},"
        f" PostgreSQL {grown['pg'] / members:.0f} ({ratio:.2f}x)"
    )
    assert ratio <= SIZE_RATIO


def _synced(tmp_path: Path, docroot: Path, server: FixtureServer, url: str) -> Path:
    build_catalog_from_specs(
        docroot, {"develop": {"root": synthetic_specs(30, seed=5)}}, signed=False
    )
    config = tmp_path / "mirrorsync.yaml"
    config.write_text(
        catalog_config_text(tmp_path, server).replace(
            f"database: {tmp_path / 'state.db'}", f"database: '{url}'"
        )
    )
    config.chmod(0o600)
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return config


def test_postgresql_still_refuses_a_membership_naming_no_spec_or_stack(
    tmp_path: Path, docroot: Path, server: FixtureServer, postgres_url: str
) -> None:
    # Since 0015 the memberships are rows of membership_groups (a stack, the
    # versions it entered and left at, an array of spec ids): the same checks hold
    # for every id of an array.
    _synced(tmp_path, docroot, server, postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        (spec_id, stack_id) = conn.execute(
            "SELECT spec_id, stack_id FROM memberships LIMIT 1"
        ).fetchone() or (0, 0)
        (free_id,) = conn.execute(
            "INSERT INTO specs (hash, name, version, platform, os, target, variants,"
            " first_seen) VALUES ('x' || repeat('a', 31), 'n', '1', 'p', 'o', 't', '[]', 'x')"
            " RETURNING id"
        ).fetchone() or (0,)
        add = "INSERT INTO membership_groups (stack_id, entered, spec_ids) VALUES"
        refused = [
            (f"{add} (%s, 9, ARRAY[999999])", (stack_id,)),
            (f"{add} (999999, 9, ARRAY[%s])", (spec_id,)),
            (f"{add} (%s, 9, ARRAY[%s, %s + 1])", (stack_id, free_id, free_id)),
            ("DELETE FROM specs WHERE id = %s", (spec_id,)),
            ("DELETE FROM stacks WHERE id = %s", (stack_id,)),
            ("UPDATE specs SET id = 999999 WHERE id = %s", (spec_id,)),
            ("UPDATE stacks SET id = 999999 WHERE id = %s", (stack_id,)),
            (
                "UPDATE membership_groups SET spec_ids = spec_ids || %s WHERE %s = ANY(spec_ids)",
                (free_id, spec_id),
            ),
            (
                "UPDATE membership_groups SET spec_ids[1] = %s WHERE %s = ANY(spec_ids)",
                (free_id, spec_id),
            ),
            ("UPDATE membership_groups SET stack_id = stack_id + 1", ()),
        ]
        for sql, params in refused:
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                conn.execute(sql, params)
        for empty in ("'{}'", "ARRAY[NULL::int]"):  # a row holds at least one spec
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(f"{add} (%s, 9, {empty})", (stack_id,))
        copy_in = "COPY membership_groups (stack_id, entered, spec_ids) FROM STDIN"
        with (
            pytest.raises(psycopg.errors.ForeignKeyViolation),
            conn.cursor() as cursor,
            cursor.copy(copy_in) as copy,
        ):
            copy.write_row((stack_id, 9, [999999]))
        # What the foreign keys allowed still passes: a spec no membership names goes,
        # a membership of stored rows comes, and closing one changes neither reference;
        # nor does a spec leaving a row (the store splits rows so).
        conn.execute(f"{add} (%s, 9, ARRAY[%s, %s])", (stack_id, spec_id, free_id))
        conn.execute(
            "UPDATE membership_groups SET spec_ids = ARRAY[%s] WHERE entered = 9", (free_id,)
        )
        conn.execute('UPDATE membership_groups SET "left" = 10 WHERE entered = 9')
        conn.execute("DELETE FROM membership_groups WHERE entered = 9")
        conn.execute("DELETE FROM specs WHERE id = %s", (free_id,))
        orphans = conn.execute(
            "SELECT count(*) FROM memberships m WHERE NOT EXISTS"
            " (SELECT 1 FROM specs s WHERE s.id = m.spec_id)"
            " OR NOT EXISTS (SELECT 1 FROM stacks s WHERE s.id = m.stack_id)"
        ).fetchone()
        assert orphans == (0,)


def test_postgresql_refuses_a_spec_held_twice_by_a_stack_from_one_version(
    tmp_path: Path, docroot: Path, server: FixtureServer, postgres_url: str
) -> None:
    # The primary key (stack_id, spec_id, entered) refused this before 0015; the
    # groups must too, whoever writes them: the same spec entering the same stack
    # at the same version twice, in another row or in two rows of one statement.
    _synced(tmp_path, docroot, server, postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        (spec_id, stack_id, entered) = conn.execute(
            "SELECT spec_id, stack_id, entered FROM memberships LIMIT 1"
        ).fetchone() or (0, 0, 0)
        add = "INSERT INTO membership_groups (stack_id, entered, spec_ids) VALUES"
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(f"{add} (%s, %s, ARRAY[%s])", (stack_id, entered, spec_id))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                f"{add} (%s, 9, ARRAY[%s]), (%s, 9, ARRAY[%s])",
                (stack_id, spec_id, stack_id, spec_id),
            )
        # Entering again at another version (after leaving) is a membership of its own.
        conn.execute(f"{add} (%s, 9, ARRAY[%s])", (stack_id, spec_id))
        conn.execute("DELETE FROM membership_groups WHERE entered = 9")


def test_postgresql_refuses_moving_a_group_onto_a_version_that_holds_its_spec(
    tmp_path: Path, docroot: Path, server: FixtureServer, postgres_url: str
) -> None:
    # The same key on an update (migration 0016): a group moved to the entered
    # version of another group of its stack that holds one of its specs would make
    # that membership twice; moved to a version none of its specs holds, it is one.
    _synced(tmp_path, docroot, server, postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        (spec_id, stack_id, entered) = conn.execute(
            "SELECT spec_id, stack_id, entered FROM memberships LIMIT 1"
        ).fetchone() or (0, 0, 0)
        conn.execute(
            "INSERT INTO membership_groups (stack_id, entered, spec_ids) VALUES (%s, 9, ARRAY[%s])",
            (stack_id, spec_id),
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("UPDATE membership_groups SET entered = %s WHERE entered = 9", (entered,))
        conn.execute("UPDATE membership_groups SET entered = 10 WHERE entered = 9")
        conn.execute("DELETE FROM membership_groups WHERE entered = 10")


# -- a database made by the landed version --------------------------------------


def _site(docroot: Path, state: int) -> None:
    pool = synthetic_specs(80, seed=12)
    root = pool[:60] if state == 1 else pool[5:70]  # churn: 5 gone, 10 new
    build_catalog_from_specs(docroot, {"develop": {"root": root, "e4s": root[::3]}}, signed=False)


def _outbox(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return sorted(conn.execute("SELECT webhook_id, event_id FROM webhook_outbox"))


def test_a_landed_postgresql_database_with_churn_and_pending_webhooks_migrates_to_0013(
    tmp_path: Path, docroot: Path, server: FixtureServer, postgres_url: str
) -> None:
    landed = landed_source(tmp_path, LANDED)
    secret = new_secret()
    (tmp_path / "hook.secret").write_text(secret)
    with Receiver(secret, status=500) as receiver:  # deliveries fail: events stay pending
        hooks = pending_hooks(tmp_path, receiver.url)
        config = tmp_path / "mirrorsync.yaml"
        config.write_text(
            catalog_config_text(tmp_path, server, extra=hooks).replace(
                f"database: {tmp_path / 'state.db'}", f"database: '{postgres_url}'"
            )
        )
        config.chmod(0o600)
        for state in (1, 2):
            _site(docroot, state)
            done = cli(landed, config, "once")
            assert done.returncode in (0, 1), done.stderr
        old_events = json_lines(cli(landed, config, "events", "--json").stdout)
        old_outbox = _outbox(postgres_url)
        old_diff = cli(
            landed, config, "diff", "--release", "develop", "--stack", "root", "v1", "v2", "--json"
        ).stdout
        assert {"spec.added", "spec.removed", "stack.added"} <= {e["type"] for e in old_events}
        assert old_outbox and old_diff

        done = cli(REPO / "src", config, "once")  # migrates; the site has not changed since
        assert done.returncode in (0, 1), done.stderr
        with psycopg.connect(postgres_url) as conn:
            (version,) = conn.execute("SELECT max(version) FROM schema_migrations").fetchone() or (
                0,
            )
            types: dict[str, str] = dict(
                conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_name = 'memberships'"
                ).fetchall()
            )
            fks = conn.execute(
                "SELECT count(*) FROM pg_constraint"
                " WHERE conrelid = 'memberships'::regclass AND contype = 'f'"
            ).fetchone()
            current = conn.execute("SELECT to_regclass('memberships_current')").fetchone()
        assert version >= 13 and fks == (0,) and current == (None,)
        assert set(types.values()) == {"integer"}
        assert json_lines(cli(REPO / "src", config, "events", "--json").stdout) == old_events
        assert (
            cli(
                REPO / "src",
                config,
                "diff",
                "--release",
                "develop",
                "--stack",
                "root",
                "v1",
                "v2",
                "--json",
            ).stdout
            == old_diff
        )
        assert _outbox(postgres_url) == old_outbox  # still pending, for the same webhooks

        # The next version of the site syncs on the migrated database as before.
        _site(docroot, 1)
        done = cli(REPO / "src", config, "once")
        assert done.returncode in (0, 1), done.stderr
        events = json_lines(cli(REPO / "src", config, "events", "--json").stdout)
        assert events[: len(old_events)] == old_events
        assert {e["type"] for e in events[len(old_events) :]} == {"spec.added", "spec.removed"}

        receiver.status = 200
        done = cli(REPO / "src", config, "webhooks", "retry")
        assert done.returncode == 0, done.stderr
        by_id = {e["id"]: e for e in events}
        sent = [e for r in receiver.acknowledged for e in r.events]
        wanted = {json.dumps(by_id[i], sort_keys=True) for _, i in old_outbox}
        assert wanted <= {json.dumps(e, sort_keys=True) for e in sent}
        assert _outbox(postgres_url) == []


# -- spec rows loaded by COPY -----------------------------------------------------


def _row(spec_hash: str, name: str, variants: str = "[]") -> tuple[object, ...]:
    return (spec_hash, name, "1.0", "linux", "ubuntu22.04", "x86_64", None, variants, "t")


def test_spec_rows_copied_on_postgresql_keep_every_byte_and_skip_those_stored_since(
    postgres_url: str,
) -> None:
    from mirrorsync.store.bulk import insert_specs
    from mirrorsync.store.postgres import copy_text

    # Text COPY joined in C only when no value needs escaping; else psycopg escapes.
    assert copy_text([("a", 1, None)], 3) == "a\t1\t\\N\n"
    for odd in ("tab\there", "new\nline", "back\\slash", "cr\rhere", "\\N"):
        assert copy_text([("a", odd, None)], 3) is None
    odd_variants = '["a\\tb","c\\\\d","e\\nf","\\\\N"]'  # JSON with escapes in it
    tricky = "x\ty\\z\nw"

    async def main() -> tuple[int, int, list[tuple[Any, ...]]]:
        store = await Store.open(PostgresUrl(postgres_url))
        try:
            async with store.transaction() as conn:  # all new: one COPY into specs
                first = await insert_specs(
                    conn, [_row("a" * 32, "one", odd_variants), _row("b" * 32, tricky)]
                )
            async with store.transaction() as conn:  # "b" stored since: staged, skipped
                second = await insert_specs(
                    conn, [_row("c" * 32, "three"), _row("b" * 32, "two"), _row("d" * 32, "four")]
                )
            async with store.conn.execute(
                "SELECT id, hash, name, compiler, variants FROM specs ORDER BY id"
            ) as cursor:
                rows = [tuple(r) for r in await cursor.fetchall()]
        finally:
            await store.close()
        return first, second, rows

    first, second, rows = anyio.run(main)
    assert (first, second) == (2, 2)
    assert [r[1:] for r in rows] == [
        ("a" * 32, "one", None, odd_variants),
        ("b" * 32, tricky, None, "[]"),
        ("c" * 32, "three", None, "[]"),
        ("d" * 32, "four", None, "[]"),
    ]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)  # in the order given
