"""``mirrorsync db migrate-to``: a SQLite history moved whole into a real PostgreSQL server.

Every test runs the real CLI as a process, against a real SQLite file written by
real syncs over HTTP, into a real PostgreSQL server (tests/postgres.py).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli, sync
from mirrorsync.config import load_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from postgres import PostgresServer
from receiver import Receiver, new_secret

# -- a SQLite history: three states of two releases, a copy, a failing webhook -------------


def _specs(tag: str, names: list[str]) -> list[dict[str, object]]:
    return [spec_node(name, "1.0", fake_hash(f"migrate:{tag}:{name}")) for name in names]


def _publish(docroot: Path, state: int) -> None:
    """State 0, then each state drops a spec of develop/root and adds two; e4s and
    v1.0 change at state 1 only. Spec manifests are written (a crawl to keep)."""
    root = _specs("root", ["zlib", "cmake", "python", "openssl", "curl"])
    root = root[state:] + _specs(f"root{state}", ["hdf5", "mpich"]) if state else root
    e4s = _specs("e4s", ["py-numpy", "py-scipy"]) + (_specs("e4s1", ["kokkos"]) if state else [])
    build_catalog_from_specs(
        docroot,
        {"develop": {"root": root, "e4s": e4s}, "v1.0": {"root": _specs("v1", ["bzip2"])}},
        signed=False,
        uncached={"develop": {"root": _specs("ext", ["gcc"])}},
    )


def _config_text(tmp_path: Path, server: FixtureServer, receiver: Receiver, database: str) -> str:
    secret = tmp_path / "hook.secret"
    if not secret.exists():
        secret.write_text(receiver.secret + "\n")
        secret.chmod(0o600)
    return f"""
database: {database}
sources:
  - name: test
    kind: catalog
    url: {server.url}/cache_spack_io_index.json
    bucket_urls: {{spack-binaries: {server.url}/}}
    manifests: new
mirrors:
  - name: local
    path: {tmp_path / "copy"}
    source: test
    release: develop
webhooks:
  - name: chat
    url: {receiver.url}
    secret_file: {secret}
http: {{timeout: 5, retries: {{attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}}}
"""


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli("-c", str(config), *args, cwd=config.parent)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _sqlite_history(
    tmp_path: Path, docroot: Path, server: FixtureServer, receiver: Receiver
) -> Path:
    """Three syncs (copies included; in this process, the CLI's own tests cover
    ``once``) with the webhook's receiver answering 503: every event still pending,
    in a delivery already attempted. The configuration."""
    config = tmp_path / "sqlite.yaml"
    config.write_text(_config_text(tmp_path, server, receiver, str(tmp_path / "state.db")))
    receiver.status = 503
    for state in range(3):
        _publish(docroot, state)
        report = sync(load_config(str(config)))
        # The first run's delivery fails; later ones wait for its next attempt.
        assert all(line.startswith("webhook chat: ") for line in report.failures)
        assert len(report.failures) == (1 if state == 0 else 0), report.failures
    return config


def _postgres_config(tmp_path: Path, sqlite_config: Path, url: str) -> Path:
    """The same configuration with ``database:`` pointed at PostgreSQL."""
    text = sqlite_config.read_text()
    config = tmp_path / "postgres.yaml"
    config.write_text(re.sub(r"(?m)^database: .*$", f"database: {url}", text))
    return config


def _sqlite_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations'"
            )
        ]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
    finally:
        conn.close()


def _target_counts(url: str) -> dict[str, int]:
    """Rows per table of the target (its schema_migrations aside), read with psycopg;
    the memberships as the view of that name shows them, one row each (migration
    0015 stores them grouped, in membership_groups)."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [
            "memberships" if r[0] == "membership_groups" else str(r[0])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
        ]
        return {
            t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])  # type: ignore[index]
            for t in tables
            if t != "schema_migrations"
        }


def _comparable(text: str) -> str:
    """Output with the database's name (``status``'s title ends with it) and the ages
    (``1m05s ago``, ``just now``: the two commands run moments apart) taken out."""
    text = re.sub(r"(\b\d+[\dsmhd]* ago|just now)", "AGO", text)
    text = re.sub(r" in \S+$", " in DB", text, flags=re.M)
    return re.sub(r" +", " ", re.sub(r"-+", "-", text))  # columns as wide as their cells


# -- the move ---------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Any:
    with Receiver(new_secret()) as running:
        yield running


def test_a_sqlite_history_moves_whole_and_every_command_answers_the_same_from_postgresql(
    tmp_path: Path,
    docroot: Path,
    server: FixtureServer,
    receiver: Receiver,
    postgres_server: PostgresServer,
    postgres_url: str,
) -> None:
    sqlite_config = _sqlite_history(tmp_path, docroot, server, receiver)
    before = _sqlite_counts(tmp_path / "state.db")
    with sqlite3.connect(tmp_path / "state.db") as conn:
        (before_versions,) = conn.execute("SELECT version FROM mirrors").fetchone()
    for table in (
        "stack_versions",
        "memberships",
        "event_rows",  # the stored events (migration 0012)
        "webhook_outbox",
        "webhook_deliveries",
        "spec_manifests",
        "listed_uncached",
        "mirrors",
        "mirror_versions",
        "mirror_members",
        "http_cache",
    ):
        assert before[table] > 0, f"the history has no {table} to copy"

    done = _cli(sqlite_config, "db", "migrate-to", postgres_url, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tables"] == before  # every table, every row
    assert report["rows"] == sum(before.values())
    assert "test-secret-pw" not in done.stdout + done.stderr  # the password is never shown
    assert _target_counts(postgres_url) == before
    with sqlite3.connect(tmp_path / "state.db") as conn:
        (last_event,) = conn.execute("SELECT max(id) FROM events").fetchone()
    assert report["sequences"]["event_rows.id"] == last_event

    pg_config = _postgres_config(tmp_path, sqlite_config, postgres_url)
    for command in (
        ["history", "--release", "develop", "--stack", "root"],
        ["diff", "--release", "develop", "--stack", "root", "1", "3"],
        ["diff", "--release", "develop", "--stack", "e4s", "1", "2", "--json"],
        ["events"],
        ["events", "--json", "--since", "5"],
        ["status"],
        ["webhooks", "list"],
    ):
        from_sqlite = _cli(sqlite_config, *command)
        from_postgres = _cli(pg_config, *command)
        assert from_sqlite.returncode == from_postgres.returncode == 0, from_postgres.stderr
        assert from_sqlite.stdout.strip(), command
        assert _comparable(from_postgres.stdout) == _comparable(from_sqlite.stdout), command

    # The pending deliveries moved too: with the receiver back, a retry from
    # PostgreSQL sends every copied event, the batch already tried under the
    # webhook-id it was tried with; the next run's events take ids after the copied
    # ones, and the copy goes on from its published version.
    tried = {r.webhook_id for r in receiver.received}
    receiver.status = 200
    done = _cli(pg_config, "webhooks", "retry")
    assert done.returncode == 0, done.stderr
    assert receiver.acknowledged_ids() == list(range(1, last_event + 1))
    assert receiver.acknowledged[0].webhook_id in tried
    _publish(docroot, 3)
    run = sync(load_config(str(pg_config)))
    assert run.exit_code == 0, run.failures
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        first, last, count = conn.execute(
            "SELECT min(id), max(id), count(*) FROM events WHERE id > %s", (last_event,)
        ).fetchone() or (None, None, 0)
        (version,) = conn.execute("SELECT version FROM mirrors").fetchone() or (None,)
    assert count == run.events > 0 and first == last_event + 1 and last == last_event + count
    assert receiver.acknowledged_ids() == list(range(1, last_event + count + 1))
    assert version == before_versions + 1


# -- failures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite history, as the first test makes it, for the tests that only copy it."""
    tmp_path = tmp_path_factory.mktemp("history")
    docroot = tmp_path / "www"
    docroot.mkdir()
    with FixtureServer(docroot) as server, Receiver(new_secret()) as receiver:
        _sqlite_history(tmp_path, docroot, server, receiver)
    return tmp_path


@pytest.fixture
def sqlite_config(tmp_path: Path, history: Path) -> Path:
    """A copy of that history, and a configuration naming the copy."""
    shutil.copy(history / "state.db", tmp_path / "state.db")
    config = tmp_path / "sqlite.yaml"
    config.write_text(
        (history / "sqlite.yaml")
        .read_text()
        .replace(str(history / "state.db"), str(tmp_path / "state.db"))
    )
    return config


def _damage(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)  # foreign keys unchecked: sqlite3's default
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("damage", "repair", "table"),
    [
        # a value PostgreSQL cannot hold (NUL in text), in one of the last tables copied
        (
            "UPDATE webhook_deliveries SET last_error = 'HTTP 503' || char(0)",
            "UPDATE webhook_deliveries SET last_error = 'HTTP 503'",
            "webhook_deliveries",
        ),
        # a dangling reference, found only when the foreign keys are rebuilt, at the end
        (
            "INSERT INTO mirror_members VALUES (999, 'abcdefg')",
            "DELETE FROM mirror_members WHERE mirror_id = 999",
            "mirror_members",
        ),
    ],
    ids=["unstorable-value", "dangling-reference"],
)
def test_a_failure_mid_copy_leaves_the_target_empty(
    tmp_path: Path,
    sqlite_config: Path,
    postgres_server: PostgresServer,
    postgres_url: str,
    damage: str,
    repair: str,
    table: str,
) -> None:
    _damage(tmp_path / "state.db", damage)
    done = _cli(sqlite_config, "db", "migrate-to", postgres_url)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("mirrorsync: error: postgresql://***@127.0.0.1:"), line
    assert "cannot copy the history, " in line and table in line, line
    assert line.endswith("nothing was written, the target is as it was"), line
    assert _target_counts(postgres_url) == {}  # not even a table

    # Repaired, the same target takes the copy: it was left empty.
    _damage(tmp_path / "state.db", repair)
    done = _cli(sqlite_config, "db", "migrate-to", postgres_url)
    assert done.returncode == 0, done.stderr


def test_a_target_that_holds_a_history_is_refused_and_left_alone(
    sqlite_config: Path, postgres_server: PostgresServer, postgres_url: str
) -> None:
    assert _cli(sqlite_config, "db", "migrate-to", postgres_url).returncode == 0
    copied = _target_counts(postgres_url)

    done = _cli(sqlite_config, "db", "migrate-to", postgres_url)
    assert done.returncode == 73
    (line,) = done.stderr.splitlines()
    assert "already holds a mirrorsync history (" in line, line
    assert line.endswith("nothing was written"), line
    assert "test-secret-pw" not in line
    assert _target_counts(postgres_url) == copied
