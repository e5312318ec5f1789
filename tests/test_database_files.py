"""The database file as real processes meet it: first opens racing, read-only
commands that never write, read-only directories, old and new schemas, damage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import QUICK_RETRIES, REPO, catalog_config_text, run_cli
from dbstate import schema_at
from mirrorsync.errors import EXIT_DAMAGED
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store.schema import migrations

NEWEST = migrations()[-1][0]
ATTEMPTS = 6  # before the fix 8 of 60 status runs failed: ~3 expected in these 24


def specs(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"{i}.0", fake_hash(f"{prefix}{i}")) for i in range(n)]


def write_config(tmp_path: Path, server: FixtureServer, database: Path) -> Path:
    path = tmp_path / f"{database.stem}.yaml"
    text = catalog_config_text(tmp_path, server, http=QUICK_RETRIES, extra="    manifests: none")
    path.write_text(text.replace(f"database: {tmp_path / 'state.db'}", f"database: {database}"))
    return path


def fingerprint(path: Path) -> tuple[str, int]:
    """The file's bytes and mtime: what a read-only command must leave alone."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli("-c", str(config), *args, cwd=config.parent)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def synced(tmp_path: Path, docroot: Path, server: FixtureServer) -> Path:
    """A config whose database holds one synced release (two stacks)."""
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3), "e4s": specs("b", 2)}})
    config = write_config(tmp_path, server, tmp_path / "db" / "state.db")
    assert cli(config, "once").returncode == 0
    return config


def database_of(config: Path) -> Path:
    return config.parent / "db" / "state.db"


# -- read-only commands never migrate or write -----------------------------------


def test_status_on_an_empty_file_writes_nothing_and_says_no_database_yet(
    tmp_path: Path, server: FixtureServer
) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    config = write_config(tmp_path, server, db)
    for command in (["status"], ["events"], ["history", "--release", "r", "--stack", "s"]):
        done = cli(config, *command)
        assert done.returncode == 66  # EX_NOINPUT: nothing synced yet
        assert f"no database yet at {db}" in done.stderr
    assert db.stat().st_size == 0  # no migration rows, no WAL header
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("empty")) == [
        "empty.db",
        "empty.yaml",
    ]


def test_read_only_commands_leave_the_database_bytes_unchanged(synced: Path) -> None:
    db = database_of(synced)
    before = fingerprint(db)
    for command in (
        ["status"],
        ["events", "--json"],
        ["history", "--release", "develop", "--stack", "root"],
        ["diff", "--release", "develop", "--stack", "root", "0", "1"],
        ["at", "--release", "develop", "--stack", "root", "1"],
        ["webhooks", "list"],
        ["verify"],
        ["export", "pages", "--release", "develop", "--out", str(synced.parent / "pages")],
    ):
        done = cli(synced, *command)
        assert done.returncode == 0, (command, done.stderr)
    assert fingerprint(db) == before


@pytest.mark.timeout(400)  # 50 processes; each takes ~1 s to start on a loaded 2-core machine
def test_four_status_and_one_once_on_a_new_database_all_succeed(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """The first open races: once migrates in one write transaction that reads the
    version itself; status never migrates, so it sees no database or a whole one."""
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2)}})
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    outcomes = {"table": 0, "no database yet": 0}
    for attempt in range(ATTEMPTS):
        db = tmp_path / f"race{attempt}.db"
        config = write_config(tmp_path, server, db)
        argv = [sys.executable, "-m", "mirrorsync", "-c", str(config)]
        commands = [[*argv, "status"]] * 2 + [[*argv, "once"]] + [[*argv, "status"]] * 2
        procs = [
            subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c in commands
        ]
        results = [(p, *p.communicate(timeout=60)) for p in procs]
        for command, (proc, _out, err) in zip(commands, results, strict=True):
            assert "Traceback" not in err and "migration" not in err, err
            if command[-1] == "once":
                assert proc.returncode == 0, err
            elif proc.returncode == 0:
                outcomes["table"] += 1
            else:
                # Before the migration, or after it and before the first stack commits.
                assert proc.returncode == 66, err
                assert f"no database yet at {db}" in err or f"no stack synced yet in {db}" in err
                outcomes["no database yet"] += 1
        with contextlib.closing(sqlite3.connect(db)) as conn:
            applied = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        assert [v for (v,) in applied] == list(range(1, NEWEST + 1))
    assert sum(outcomes.values()) == 4 * ATTEMPTS


def test_writers_racing_on_a_new_database_migrate_it_once(tmp_path: Path) -> None:
    """Four processes opening a new database for writing at the same instant."""
    db = tmp_path / "writers.db"
    code = (
        "import anyio, sys; from pathlib import Path; from mirrorsync.store import Store\n"
        "async def main():\n"
        "    async with await Store.open(Path(sys.argv[1])): pass\n"
        "anyio.run(main)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for attempt in range(5):
        path = db.with_name(f"writers{attempt}.db")
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(path)], env=env, stderr=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (NEWEST,)


@contextlib.contextmanager
def read_only_view(directory: Path, mountpoint: Path) -> Iterator[Path]:
    """``directory`` bind-mounted read-only at ``mountpoint`` (root ignores chmod)."""
    mountpoint.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(directory), str(mountpoint)], check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot bind-mount here (needs root and mount rights)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mountpoint)], check=True)
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_read_only_commands_work_on_a_read_only_directory(tmp_path: Path, synced: Path) -> None:
    db = database_of(synced)
    assert not db.with_name("state.db-wal").exists()  # a clean close leaves no -wal/-shm
    with read_only_view(db.parent, tmp_path / "ro") as ro:
        with pytest.raises(OSError):
            (ro / "probe").touch()
        config = synced.with_name("ro.yaml")
        config.write_text(synced.read_text().replace(str(db), str(ro / "state.db")))
        status = cli(config, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert sorted(s["stack"] for s in json.loads(status.stdout)) == [
            "e4s",
            "root",
        ]
        events = cli(config, "events", "--json")
        assert events.returncode == 0 and len(events.stdout.splitlines()) == 8
        once = cli(config, "once")  # a writing command says why it cannot
        assert once.returncode != 0 and str(ro / "state.db") in once.stderr


def test_a_database_whose_path_holds_uri_characters_is_read_by_every_reader(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """A command that only reads opens the file by a SQLite ``file:`` URI
    (``db.sqlite_uri``): ``%``, ``?`` and ``#`` in its directory's name must reach
    SQLite escaped, or it opens another file, or none, and a space or a non-ASCII
    letter as written. Both readers: status's (no event loop) and aiosqlite's."""
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3)}})
    db = tmp_path / "a%41 b?c#d \u00e9" / "state.db"
    config = write_config(tmp_path, server, tmp_path / "db" / "state.db")
    config.write_text(
        config.read_text().replace(f"database: {tmp_path / 'db' / 'state.db'}", f'database: "{db}"')
    )
    assert cli(config, "once").returncode == 0
    assert db.is_file() and not (tmp_path / "aA b").exists()
    status = cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert [(s["stack"], s["spec_count"]) for s in json.loads(status.stdout)] == [("root", 3)]
    events = cli(config, "events", "--json")
    assert events.returncode == 0, events.stderr
    added = [
        e["hash"] for e in map(json.loads, events.stdout.splitlines()) if e["type"] == "spec.added"
    ]
    assert sorted(added) == sorted(fake_hash(f"a{i}") for i in range(3))


def test_an_older_schema_is_named_and_once_upgrades_it(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2)}})
    db = tmp_path / "old.db"
    schema_at(db, NEWEST - 1)
    config = write_config(tmp_path, server, db)
    before = fingerprint(db)
    status = cli(config, "status")
    assert status.returncode == 65  # in the exit-code table: the data cannot be read as it is
    assert (
        f"{db}: database schema version {NEWEST - 1} is older than this mirrorsync's "
        f"({NEWEST}); run 'mirrorsync once' to upgrade it" in status.stderr
    )
    assert fingerprint(db) == before
    assert cli(config, "once").returncode == 0
    assert cli(config, "status").returncode == 0


def test_a_newer_schema_is_refused_by_every_command(tmp_path: Path, server: FixtureServer) -> None:
    db = tmp_path / "new.db"
    schema_at(db, NEWEST)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (9999, 'future', 'x')")
        conn.commit()
    config = write_config(tmp_path, server, db)
    for command in ("status", "once"):
        done = cli(config, command)
        assert done.returncode == 65
        assert f"{db}: database schema version 9999 is newer than this mirrorsync" in done.stderr


# -- a damaged database: one line, naming the file, saying what to do --------------


def corrupt_table(db: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with garbage, as a bad disk would."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
    with db.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


def assert_damaged(done: subprocess.CompletedProcess[str], db: Path, cause: str) -> None:
    assert done.returncode == EXIT_DAMAGED, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("mirrorsync: error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"mirrorsync: error: {db}: ")
    assert cause in errors[0]
    assert f'sqlite3 {db} "PRAGMA integrity_check"' in errors[0]
    assert "restore it from a backup" in errors[0]


@pytest.mark.parametrize(
    ("command", "table"),
    [(["status"], "stacks"), (["events"], "event_rows"), (["once"], "stacks")],  # 0012
    ids=["status", "events", "once"],
)
def test_a_corrupted_page_is_one_line_naming_the_file(
    synced: Path, command: list[str], table: str
) -> None:
    db = database_of(synced)
    corrupt_table(db, table)
    assert_damaged(cli(synced, *command), db, "the database is damaged")


def test_a_file_that_is_not_a_database_is_one_line(synced: Path) -> None:
    db = database_of(synced)
    with db.open("r+b") as f:
        f.write(b"this is not a database header" * 4)
    for command in ("status", "events", "once"):
        assert_damaged(cli(synced, command), db, "the database is damaged")


@pytest.mark.parametrize(
    ("command", "table"),
    [
        (["status"], "webhooks"),
        (["events"], "event_rows"),  # the stored events (migration 0012)
        (["history", "--release", "develop", "--stack", "root"], "stack_versions"),
        (["once"], "releases"),
    ],
)
def test_a_schema_with_a_table_missing_is_one_line(
    synced: Path, command: list[str], table: str
) -> None:
    db = database_of(synced)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
    assert_damaged(cli(synced, *command), db, "the database's schema is damaged")
