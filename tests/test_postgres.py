"""PostgreSQL as the store (issue 16): the CLI as real processes on a real server.

The same catalogue synced into a SQLite file and into a PostgreSQL database must
read back the same through every command; a server that is down, a wrong
password or a held run lock are one line each, with their exit codes, and the
password is never shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from conftest import (
    QUICK_RETRIES,
    REPO,
    catalog_config_text,
    json_lines,
    run_cli,
    sync,
    write_config,
)
from dbstate import differences
from mirrorsync.config import load_config
from mirrorsync.errors import EXIT_UNAVAILABLE
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store import Store
from mirrorsync.store.location import PostgresUrl
from mirrorsync.store.postgres import AdvisoryLock, translate
from postgres import PASSWORD, PostgresServer


def specs(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"{i}.0", fake_hash(f"{prefix}{i}")) for i in range(n)]


def config_file(tmp_path: Path, server: FixtureServer, database: str, name: str) -> Path:
    text = catalog_config_text(tmp_path, server, http=QUICK_RETRIES, extra="    manifests: none")
    text = text.replace(f"database: {tmp_path / 'state.db'}", f"database: {database}")
    return write_config(tmp_path / name, text)


def parse_json(text: str) -> object:
    """One JSON document, or JSON lines."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json_lines(text)


def strip_times(value: object) -> object:
    """``value`` without the fields that differ between two runs (times)."""
    if isinstance(value, dict):
        return {
            k: strip_times(v)
            for k, v in value.items()
            if not (k.endswith("_at") or k in ("last_checked", "last_changed", "created"))
        }
    if isinstance(value, list):
        return [strip_times(v) for v in value]
    return value


def test_once_and_every_reader_answer_the_same_as_sqlite(
    tmp_path: Path, docroot: Path, server: FixtureServer, postgres_url: str
) -> None:
    sqlite_config = config_file(tmp_path, server, str(tmp_path / "s.db"), "s.yaml")
    pg_config = config_file(tmp_path, server, postgres_url, "p.yaml")
    steps = [
        {"develop": {"root": specs("a", 4), "e4s": specs("b", 3)}, "v1": {"root": specs("c", 2)}},
        {"develop": {"root": specs("a", 2) + specs("d", 2)}, "v1": {"root": specs("c", 2)}},
    ]
    for releases in steps:
        build_catalog_from_specs(docroot, releases)
        for config in (sqlite_config, pg_config):
            report = sync(load_config(str(config)))
            assert report.exit_code == 0, report.failures
    assert differences(tmp_path / "s.db", PostgresUrl(postgres_url)) == {}

    for args in (
        ["events", "--json"],
        ["events", "--since", "3", "--type", "spec.removed", "--json"],
        ["status", "--json"],
        ["history", "--release", "develop", "--stack", "root", "--json"],
        ["diff", "--release", "develop", "--stack", "root", "1", "2", "--json"],
        ["at", "--release", "develop", "--stack", "root", "1", "--json"],
        # name filters are globs (issue 30), matched alike by SQLite and PostgreSQL
        ["events", "--stack", "r*", "--package", "[!z]*", "--release", "d?velop", "--json"],
        ["status", "--stack", "e*", "--json"],
        ["specs", "--release", "dev*", "--stack", "r??t", "--package", "*", "--json"],
        ["diff", "--release", "v[0-9]", "--stack", "*", "v0", "v1", "--json"],
    ):
        answers = []
        for config in (sqlite_config, pg_config):
            done = run_cli("-c", str(config), *args, cwd=tmp_path)
            assert done.returncode == 0, (args, done.stderr)
            answer = strip_times(parse_json(done.stdout))
            if args[0] == "events":  # stacks commit concurrently: ids follow commit order
                assert isinstance(answer, list)
                answer = sorted(json.dumps({**e, "id": None}, sort_keys=True) for e in answer)
            answers.append(answer)
        assert answers[0] == answers[1], args
        assert answers[0], args  # each command had something to say
    events = json_lines(run_cli("-c", str(pg_config), "events", "--json", cwd=tmp_path).stdout)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    for option in ("--source", "--release", "--stack", "--package"):  # matching nothing: 2
        done = run_cli("-c", str(pg_config), "events", option, "zz*", cwd=tmp_path)
        assert done.returncode == 2 and f"{option} zz* matches no" in done.stderr, done.stderr


def test_a_server_that_is_down_is_one_line_exit_69(tmp_path: Path, server: FixtureServer) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:{port}/mirrorsync"
    config = config_file(tmp_path, server, url, "c.yaml")
    for args in (["once"], ["events"]):  # one that writes, one that reads
        done = run_cli("-c", str(config), *args, cwd=tmp_path)
        assert done.returncode == EXIT_UNAVAILABLE, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert (
            f"postgresql://***@127.0.0.1:{port}/mirrorsync: database server unavailable"
            in (lines[0])
        )
        assert PASSWORD not in done.stderr and "someone" not in done.stderr
        assert "Traceback" not in done.stderr


def test_password_from_a_file_and_a_wrong_one_never_shown(
    tmp_path: Path, docroot: Path, server: FixtureServer, postgres_url: str
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2)}})
    without = postgres_url.replace(f":{PASSWORD}@", "@")
    secret = tmp_path / "pgpass"
    secret.write_text(PASSWORD + "\n")
    text = catalog_config_text(tmp_path, server, http=QUICK_RETRIES)
    mapping = f"database: {{url: '{without}', password_file: {secret}}}"
    config = write_config(
        tmp_path / "c.yaml", text.replace(f"database: {tmp_path / 'state.db'}", mapping)
    )
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    secret.write_text("not-the-password\n")
    wrong = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert wrong.returncode == 1
    assert "cannot connect: password authentication failed" in wrong.stderr
    assert "not-the-password" not in wrong.stderr and "Traceback" not in wrong.stderr

    # From the environment, as webhook secrets may be given.
    by_env = text.replace(
        f"database: {tmp_path / 'state.db'}",
        f"database: {{url: '{without}', password_env: MS_TEST_PGPW}}",
    )
    env_config = write_config(tmp_path / "e.yaml", by_env)
    done = run_cli("-c", str(env_config), "events", cwd=tmp_path, env={"MS_TEST_PGPW": PASSWORD})
    assert done.returncode == 0, done.stderr
    unset = run_cli("-c", str(env_config), "events", cwd=tmp_path)
    assert unset.returncode == 2
    assert "database.password_env: environment variable MS_TEST_PGPW is not set" in unset.stderr


def test_once_is_not_refused_by_the_whole_database_lock_on_postgresql(
    tmp_path: Path, docroot: Path, server: FixtureServer, postgres_url: str
) -> None:
    """On PostgreSQL a sync claims each stack (tests/test_instances.py) instead of the
    whole database: the lock that mirror and webhooks retry/replay hold refuses no sync."""
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2)}})
    config = config_file(tmp_path, server, postgres_url, "c.yaml")

    async def main() -> None:
        lock = AdvisoryLock(PostgresUrl(postgres_url))
        assert await lock.try_acquire()
        try:
            done = await anyio.to_thread.run_sync(
                lambda: run_cli("-c", str(config), "once", cwd=tmp_path)
            )
            assert done.returncode == 0, done.stderr
            assert "develop/root changed" in done.stderr and PASSWORD not in done.stderr
        finally:
            await lock.release()

    anyio.run(main)


def test_no_database_yet_on_an_empty_postgresql_database(
    tmp_path: Path, server: FixtureServer, postgres_url: str
) -> None:
    config = config_file(tmp_path, server, postgres_url, "c.yaml")
    done = run_cli("-c", str(config), "events", cwd=tmp_path)
    assert done.returncode == 66
    assert "no database yet at postgresql://***@" in done.stderr


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("gcc*", ["gcc", "gcc-13"], ["xgcc", "GCC"]),
        ("py-?", ["py-a"], ["py-ab", "py-"]),
        ("[ab]c", ["ac", "bc"], ["cc", "abc"]),
        ("[^ab]c", ["cc"], ["ac", "bc"]),
        ("a.b+(c)", ["a.b+(c)"], ["axb+(c)", "a.bb(c)"]),
        ("100%_*", ["100%_x"], ["100x_x"]),
    ],
)
def test_postgresql_matches_webhook_globs_as_sqlite_glob_does(
    postgres_url: str, glob: str, matches: list[str], misses: list[str]
) -> None:
    async def main() -> list[bool]:
        results = []
        async with await Store.open(PostgresUrl(postgres_url)) as store:  # migrated
            for value in matches + misses:
                async with store.conn.execute(
                    f"SELECT {store.dialect.glob('?', '?')}", (value, glob)
                ) as cursor:
                    row = await cursor.fetchone()
                assert row is not None
                results.append(bool(row[0]))
        return results

    expected = [True] * len(matches) + [False] * len(misses)
    with contextlib.closing(sqlite3.connect(":memory:")) as lite:
        found = [
            bool(lite.execute("SELECT ? GLOB ?", (v, glob)).fetchone()[0]) for v in matches + misses
        ]
    assert found == expected  # what SQLite's GLOB says
    assert anyio.run(main) == expected


def test_translation_keeps_literals_and_quotes_left() -> None:
    sql = "SELECT '?', ? , :name, m.left FROM a LEFT JOIN b ON x::text = '%' -- it's ?\n"
    assert translate(sql) == (
        "SELECT '?', %s , %(name)s, m.\"left\" FROM a LEFT JOIN b ON x::text = '%%' -- it's ?\n"
    )


def test_sqlite_commands_never_load_the_postgresql_driver() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            # every command's module (cli/cmd_*.py), as the dispatcher imports them
            "import sys, importlib, pkgutil, mirrorsync.cli, mirrorsync.lock;"
            " [importlib.import_module(f'mirrorsync.cli.{m.name}')"
            "  for m in pkgutil.iter_modules(mirrorsync.cli.__path__)"
            "  if m.name.startswith('cmd_')];"
            " print(sorted(m for m in sys.modules if m.startswith('psycopg')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"  # its import is most of a second: SQLite never pays it


def test_the_server_dropping_the_run_ends_it_with_one_line_exit_69(
    tmp_path: Path,
    docroot: Path,
    server: FixtureServer,
    postgres_server: PostgresServer,
    postgres_url: str,
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3)}})
    config = config_file(tmp_path, server, postgres_url, "c.yaml")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0  # migrated
    server.add_fault("*index.manifest.json", "delay", times=None, delay=3.0)
    process = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync", "-c", str(config), "once"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    dbname = postgres_url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait for its connections, then drop them
        found = postgres_server.admin(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE datname = '{dbname}' AND application_name LIKE 'mirrorsync pid=%'"
        )
        if int(found.strip() or 0) >= 2:  # the store's and the run lock's
            break
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT_UNAVAILABLE, stderr
    errors = [line for line in stderr.splitlines() if "database server unavailable" in line]
    assert errors and all(
        f"postgresql://***@127.0.0.1:{postgres_server.port}/" in e for e in errors
    )
    assert "Traceback" not in stderr and PASSWORD not in stderr
