"""Tables for scripts, and tables that say what they count (issue 30).

Every test runs ``python -m mirrorsync`` as a real process against a real SQLite
file written through the store's own functions (``bigdb``).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
from pathlib import Path

import anyio
import pytest

from bigdb import build_history, generated_spec
from conftest import QUICK_RETRIES, REPO, catalog_config_text, run_cli, spec_nodes
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.redact import Url
from mirrorsync.store import Store, writes
from mirrorsync.store import mirrors as mirror_store
from mirrorsync.store import webhooks as webhook_store

RELEASE = ("--release", "develop", "--stack", "root")
#: A release name holding a tab, a newline and a backslash: a cell that must not split.
NASTY = "dev\tel\nop\\x"


def write_config(tmp_path: Path, database: Path, extra: str = "") -> Path:
    config = tmp_path / "mirrorsync.yaml"
    config.write_text(
        f"database: {database}\nsources: [{{name: test, kind: catalog, manifests: none}}]\n" + extra
    )
    return config


@pytest.fixture(scope="module")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """develop/root: 3 versions of 20 specs; develop/e4s: 3 x 5; a release with a tab."""
    path = tmp_path_factory.mktemp("tables") / "state.db"
    build_history(
        path,
        stacks={("develop", "root"): 20, ("develop", "e4s"): 5, (NASTY, "root"): 1},
        versions=3,
    )
    return path


@pytest.fixture
def config(tmp_path: Path, history_db: Path) -> Path:
    return write_config(tmp_path, history_db)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", str(config), *args, cwd=config.parent)


TABLES = [
    ("status",),
    ("events",),
    ("events", "--reverse", "--limit", "5"),
    ("history", *RELEASE),
    ("specs", *RELEASE),
    ("at", *RELEASE, "2"),
    ("diff", *RELEASE, "1", "3"),
]


def _rows_of(table: str) -> list[str]:
    """The rows of a human table: every line after its rule of dashes."""
    lines = table.splitlines()
    rule = next(i for i, line in enumerate(lines) if line and set(line) <= {"-", " "})
    return lines[rule + 1 :]


@pytest.mark.parametrize("command", TABLES, ids=lambda c: " ".join(c))
def test_no_headers_prints_the_rows_alone(config: Path, command: tuple[str, ...]) -> None:
    """`--no-headers`: the same rows as the table, one line each; no title, header or rule."""
    table = cli(config, *command)
    assert table.returncode == 0, table.stderr
    rows = _rows_of(table.stdout)
    assert rows
    for placement in ((*command, "--no-headers"), ("--no-headers", *command)):
        bare = cli(config, *placement)
        assert bare.returncode == 0, bare.stderr
        assert bare.stdout.splitlines() == rows
        assert not any(line and set(line) <= {"-", " "} for line in bare.stdout.splitlines())


@pytest.mark.parametrize("command", TABLES, ids=lambda c: " ".join(c))
def test_tsv_is_a_header_line_then_one_line_per_row(config: Path, command: tuple[str, ...]) -> None:
    """`--format tsv`: a header line, then each row with exactly as many cells; no title,
    no rule, no padding; `--no-headers` drops the header line."""
    table = cli(config, *command)
    tsv = cli(config, *command, "--format", "tsv")
    assert tsv.returncode == 0, tsv.stderr
    lines = tsv.stdout.splitlines()
    header = lines[0].split("\t")
    assert "-" * 3 not in tsv.stdout.split("\t")[0]
    assert len(lines) - 1 == len(_rows_of(table.stdout))
    for line in lines[1:]:
        cells = line.split("\t")
        assert len(cells) == len(header), line
        assert all(cell == cell.strip() for cell in cells), line
    bare = cli(config, "--format", "tsv", "--no-headers", *command)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.splitlines() == lines[1:]


def test_a_tab_or_newline_in_a_value_cannot_break_a_tsv_row(config: Path) -> None:
    """A release named with a tab, a newline and a backslash: one row, one cell, and the
    escaping undone gives the name back."""
    tsv = cli(config, "events", "--format", "tsv", "--no-headers", "--type", "stack.added")
    assert tsv.returncode == 0, tsv.stderr
    rows = [line.split("\t") for line in tsv.stdout.splitlines()]
    assert len(rows) == 3  # develop/root, develop/e4s and the nasty one
    assert all(len(row) == 7 for row in rows)
    stacks = [row[3] for row in rows]
    nasty = next(s for s in stacks if "\\x09" in s)
    assert nasty == "test:dev\\x09el\\x0aop\\\\x/root"
    undone = nasty.replace("\\x09", "\t").replace("\\x0a", "\n").replace("\\\\", "\\")
    assert undone == f"test:{NASTY}/root"


def test_tsv_with_json_is_a_usage_error(config: Path) -> None:
    both = cli(config, "events", "--json", "--format", "tsv")
    assert both.returncode == 2
    assert "--format tsv and --json" in both.stderr
    unknown = cli(config, "events", "--format", "csv")
    assert unknown.returncode == 2
    assert "invalid choice" in unknown.stderr


# -- tables that line up, and say what they count -----------------------------------

LONG = ("releases/v2025.11", "ml-linux-x86_64-cuda")  # a label over 20 characters


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two stacks holding the same 30 specs (and 10 of their own each): 50 distinct
    specs in 80 memberships; one of them with a long name."""
    path = tmp_path_factory.mktemp("shared") / "state.db"

    async def build() -> None:
        async with await Store.open(path) as store:
            source_id = await writes.ensure_source(store, "test", "catalog", "http://x.invalid/")
            shared = [generated_spec(i, "shared") for i in range(30)]
            for n, (release, name) in enumerate((("develop", "root"), LONG)):
                row = await writes.ensure_stack(store, source_id, release, name)
                own = [generated_spec(i, f"own{n}") for i in range(10)]
                snapshot = writes.Snapshot(row.id, None, None, shared + own, (), announce=True)
                await writes.commit_snapshot(store, snapshot, "2026-11-20T08:00:00.000000Z")

    anyio.run(build)
    return path


def test_events_columns_line_up_whatever_the_stack_names(tmp_path: Path, shared_db: Path) -> None:
    """A stack label over 20 characters and a 21-character event type: every row's hash
    and spec start under their headers (before: the long label pushed its rows right)."""
    events = cli(write_config(tmp_path, shared_db), "events")
    assert events.returncode == 0, events.stderr
    header, _rule, *rows = events.stdout.splitlines()
    assert any(f"{LONG[0]}/{LONG[1]}" in row for row in rows)
    hashes = [row for row in rows if "@" in row]
    assert len(hashes) == 80
    for row in hashes:
        spec_hash = row.split()[-2]
        assert row.index(spec_hash) == header.index("hash"), row
        assert row.rstrip().rindex(" ") + 1 == header.index("spec"), row
    # the version column, right-aligned: its numbers end where its header does
    end = header.index("version") + len("version")
    for row in rows:
        assert row[:end].endswith(" 1") and not row[end : end + 1].strip(), row


def test_status_counts_distinct_specs_not_memberships(tmp_path: Path, shared_db: Path) -> None:
    """`status`: 2 stacks sharing 30 of their 40 specs hold 50 distinct specs, in 80
    memberships (before: `80 specs`); `--stack` counts that stack's alone."""
    config = write_config(tmp_path, shared_db)
    status = cli(config, "status")
    assert status.returncode == 0, status.stderr
    title = status.stdout.splitlines()[0]
    assert title.startswith("2 stacks hold 50 distinct specs (80 memberships) in "), title
    one = cli(config, "status", "--stack", "root")
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("1 stack holds 40 distinct specs in "), one.stdout


# -- forget webhook|mirror NAME ------------------------------------------------------


@pytest.fixture
def stale_db(tmp_path: Path) -> Path:
    """A history whose webhook `oldhook` (3 events pending) and copy `oldcopy` are in
    the database, as after they left the configuration."""
    path = tmp_path / "stale.db"

    async def register() -> None:
        async with await Store.open(path) as store:
            hook = webhook_store.Registration("oldhook", Url("http://127.0.0.1:9/hook"))
            await webhook_store.register(store, [hook], "2026-11-19T08:00:00.000000Z")

    async def copy() -> None:
        async with await Store.open(path) as store:
            source_id = await mirror_store.source_id(store, "test")
            assert source_id is not None
            await mirror_store.ensure(
                store, "oldcopy", str(tmp_path / "copy"), source_id, "develop"
            )

    anyio.run(register)
    build_history(path, stacks={("develop", "root"): 1})  # stack.added, release, spec: queued
    anyio.run(copy)
    return path


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql))


def test_forget_ends_the_listing_and_keeps_the_history(tmp_path: Path, stale_db: Path) -> None:
    config = write_config(tmp_path, stale_db)
    before = cli(config, "status")
    assert before.returncode == 0, before.stderr
    assert "oldhook" in before.stdout and "oldcopy" in before.stdout
    outbox = _rows(stale_db, "SELECT event_id FROM webhook_outbox ORDER BY event_id")
    assert outbox

    for kind, name in (("webhook", "oldhook"), ("mirror", "oldcopy")):
        done = cli(config, "forget", kind, name)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"forgot {kind} {name}: no longer listed; its history is kept\n"
        again = cli(config, "forget", kind, name)
        assert again.returncode == 0, again.stderr
        assert "forgotten already" in again.stdout

    after = cli(config, "status")
    assert after.returncode == 0, after.stderr
    assert "oldhook" not in after.stdout and "oldcopy" not in after.stdout
    listed = cli(config, "webhooks", "list")
    assert listed.returncode == 0 and "oldhook" not in listed.stdout
    check = cli(config, "status", "--check")
    assert "oldhook" not in check.stdout and "oldcopy" not in check.stdout
    # the history stays: the rows, the outbox, the events
    assert _rows(stale_db, "SELECT event_id FROM webhook_outbox ORDER BY event_id") == outbox
    assert _rows(stale_db, "SELECT name FROM webhooks WHERE forgotten_at IS NOT NULL") == [
        ("oldhook",)
    ]
    assert _rows(stale_db, "SELECT name FROM mirrors WHERE forgotten_at IS NOT NULL") == [
        ("oldcopy",)
    ]


def test_forget_refuses_a_configured_or_unknown_name(tmp_path: Path, stale_db: Path) -> None:
    config = tmp_path / "configured.yaml"
    config.write_text(
        f"database: {stale_db}\nsources: [{{name: test, kind: catalog, manifests: new}}]\n"
        "webhooks: [{name: oldhook, url: 'http://127.0.0.1:9/hook', secret_env: HOOK_SECRET}]\n"
        f"mirrors: [{{name: oldcopy, path: {tmp_path / 'copy'}, source: test, release: develop}}]\n",
    )
    env = {"HOOK_SECRET": "whsec_" + "A" * 43 + "="}
    for kind, name in (("webhook", "oldhook"), ("mirror", "oldcopy")):
        refused = run_cli("-c", str(config), "forget", kind, name, cwd=tmp_path, env=env)
        assert refused.returncode == 2, refused.stderr
        assert f"{kind} {name} is still in {config}" in refused.stderr
        unknown = run_cli("-c", str(config), "forget", kind, "nosuch", cwd=tmp_path, env=env)
        assert unknown.returncode == 2, unknown.stderr
        assert f"no {kind} nosuch in {stale_db}" in unknown.stderr
    listed = run_cli("-c", str(config), "status", cwd=tmp_path, env=env)
    assert "oldhook" in listed.stdout and "oldcopy" in listed.stdout


# -- environment variables in configuration paths ----------------------------------


def test_database_path_expands_environment_variables(tmp_path: Path, history_db: Path) -> None:
    """`database: ${VAR}/state.db` reads $VAR's directory (before: a literal `./${VAR}/`
    was looked up, and created by `once`); `$VAR` without braces too; an unset variable
    is a configuration error naming the key, exit 2."""
    work = tmp_path / "work"
    work.mkdir()
    env = {"MS_STATE": str(history_db.parent)}
    for form in ("${MS_STATE}", "$MS_STATE"):
        config = work / "mirrorsync.yaml"
        config.write_text(
            f"database: {form}/state.db\nsources: [{{name: test, kind: catalog, manifests: none}}]\n"
        )
        status = run_cli("-c", str(config), "status", cwd=work, env=env)
        assert status.returncode == 0, status.stderr
        assert f" in {history_db}" in status.stdout.splitlines()[0]
    config.write_text(
        "database: ${MS_NOT_SET_ANYWHERE}/x.db\n"
        "sources: [{name: test, kind: catalog, manifests: none}]\n"
    )
    unset = run_cli("-c", str(config), "once", "--dry-run", cwd=work, env=env)
    assert unset.returncode == 2, unset.stderr
    assert "database: environment variable MS_NOT_SET_ANYWHERE is not set" in unset.stderr
    assert sorted(p.name for p in work.iterdir()) == ["mirrorsync.yaml"]  # no ./${...}/


def test_every_configuration_path_expands_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's directory, its keeplist and lockfiles, the metrics file and key files
    expand `~` and `$VAR` as the database and password_file do."""
    from mirrorsync.config import parse_config
    from mirrorsync.errors import ConfigError

    monkeypatch.setenv("MS_TOP", str(tmp_path))
    text = (
        "database: $MS_TOP/db/state.db\n"
        "sources: [{name: test, kind: catalog, manifests: new}]\n"
        "metrics: {textfile: '${MS_TOP}/metrics/ms.prom'}\n"
        "mirrors: [{name: local, path: '${MS_TOP}/copy', source: test, release: develop}]\n"
    )
    config = parse_config(text, "c.yaml")
    assert config.database_path == tmp_path / "db/state.db"
    assert config.metrics.textfile_path == tmp_path / "metrics/ms.prom"
    assert config.mirrors[0].directory == tmp_path / "copy"
    monkeypatch.delenv("MS_TOP")
    with pytest.raises(ConfigError, match=r"metrics\.textfile: environment variable MS_TOP"):
        parse_config(text.replace("$MS_TOP/db", str(tmp_path)), "c.yaml")
    with pytest.raises(ConfigError, match=r"mirrors\[0\]\.path: environment variable MS_TOP"):
        parse_config(text.replace("$MS_TOP/db", "db").replace("${MS_TOP}/m", "m"), "c.yaml")


def test_the_shipped_config_names_the_units_state_directory_database(tmp_path: Path) -> None:
    """config/mirrorsync.yaml names /var/lib/<StateDirectory>/mirrorsync.db, so a command
    run by hand with it reads the timer's history, not ./mirrorsync.db."""
    from mirrorsync.config import parse_config

    shipped = REPO / "config" / "mirrorsync.yaml"
    unit = (REPO / "systemd" / "mirrorsync.service").read_text()
    (state,) = re.findall(r"^StateDirectory=(\S+)$", unit, re.MULTILINE)
    expected = Path("/var/lib") / state / "mirrorsync.db"
    config = parse_config(shipped.read_text(), str(shipped))
    assert config.database == str(expected)
    assert config.database_path == expected
    status = run_cli("-c", str(shipped), "status", cwd=tmp_path)
    if not expected.exists():
        assert status.returncode == 66, status.stderr
        assert f"no database yet at {expected}" in status.stderr
    assert not (tmp_path / "mirrorsync.db").exists()


@pytest.mark.usefixtures("backend")
def test_forget_a_webhook_on_both_backends(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """SQLite and PostgreSQL: a webhook that queued events leaves the configuration;
    `status` still lists it until `forget`, then not; configured again, it is back."""
    build_catalog_from_specs(docroot, {"develop": {"root": spec_nodes("f", 2)}}, manifests=False)
    base = catalog_config_text(tmp_path, server, extra="    manifests: none", http=QUICK_RETRIES)
    hook = "webhooks: [{name: gone, url: 'http://127.0.0.1:9/hook', secret_env: HOOK_SECRET}]\n"
    config = tmp_path / "c.yaml"
    config.write_text(base + hook)
    env = {"HOOK_SECRET": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("-c", str(config), *args, cwd=tmp_path, env=env)

    assert run("once").returncode == 1  # the receiver is down: pending events
    config.write_text(base)
    assert "gone" in run("status").stdout
    forgotten = run("forget", "webhook", "gone")
    assert forgotten.returncode == 0, forgotten.stderr
    assert "gone" not in run("status").stdout
    assert "gone" not in run("webhooks", "list").stdout
    config.write_text(base + hook)
    again = run("once")  # registered again (its retry not yet due): listed again
    assert again.returncode in (0, 1), again.stderr
    assert "gone" in run("status").stdout
