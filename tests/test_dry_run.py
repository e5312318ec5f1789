"""``once --dry-run`` reports what would change and leaves nothing behind.

It writes inside one database transaction that it rolls back (in memory when
there is no database yet), so it neither creates files nor copies the database.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from conftest import quick_config_file, run_cli, spec_nodes
from dbstate import differences, event_counts
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer


def files_under(path: Path) -> set[Path]:
    return set(path.rglob("*"))


def test_dry_run_on_a_fresh_config_creates_no_file_or_directory(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(
        docroot, {"develop": {"root": spec_nodes("r", 3), "e4s": spec_nodes("e", 2)}}
    )
    state = tmp_path / "state"
    config = quick_config_file(tmp_path, server, "state/sub/mirrorsync.db")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = files_under(tmp_path)
    env = {**os.environ, "TMPDIR": str(scratch)}
    dry = run_cli("-c", str(config), "once", "--dry-run", "--json", cwd=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True
    assert {(s["stack"], s["status"], s["added"]) for s in report["stacks"]} == {
        ("root", "changed", 3),
        ("e4s", "changed", 2),
    }
    assert report["events"] == 1 + 2 + 5  # release.added, stack.added x2, spec.added x5
    assert files_under(tmp_path) == before  # no database, directory, lock or scratch file
    assert not state.exists()


def test_dry_run_of_a_big_database_needs_no_copy_and_changes_nothing(
    tmp_path: Path, docroot: Path, server: FixtureServer, small_tmpfs: Path
) -> None:
    big = spec_nodes("big", 10_000)  # over 2 MiB without an index of current members (0014)
    build_catalog_from_specs(
        docroot, {"develop": {"root": spec_nodes("r", 3), "e4s": big}}, manifests=False
    )
    db = tmp_path / "state.db"
    config = quick_config_file(tmp_path, server, "state.db")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    assert db.stat().st_size > 2 * (1 << 20)  # twice what the scratch disk holds
    copy = sqlite3.connect(tmp_path / "before.db")
    source = sqlite3.connect(db)
    source.backup(copy)
    source.close()
    copy.close()

    # root loses two specs; e4s (the big index) is unchanged and not downloaded.
    build_catalog_from_specs(
        docroot, {"develop": {"root": spec_nodes("r", 1), "e4s": big}}, manifests=False
    )
    env = {**os.environ, "TMPDIR": str(small_tmpfs)}
    dry = run_cli("-c", str(config), "once", "--dry-run", "--json", cwd=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "Traceback" not in dry.stderr
    stacks = {s["stack"]: (s["status"], s["removed"]) for s in json.loads(dry.stdout)["stacks"]}
    assert stacks == {"root": ("changed", 2), "e4s": ("unchanged", 0)}
    assert differences(tmp_path / "before.db", db) == {}
    assert not any(t == "spec.removed" for t, _, _ in event_counts(db))
    assert list(small_tmpfs.iterdir()) == []


def test_dry_run_lists_the_hashes_each_stack_would_gain_or_lose(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """Counts by default; ``--json`` and ``-v`` name the hashes."""
    first, later = spec_nodes("r", 3), spec_nodes("r", 2) + spec_nodes("n", 2)
    build_catalog_from_specs(docroot, {"develop": {"root": first}}, manifests=False)
    config = quick_config_file(tmp_path, server, "m.db")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    build_catalog_from_specs(docroot, {"develop": {"root": later}}, manifests=False)
    added = sorted(str(n["hash"]) for n in later[2:])
    removed = [str(first[2]["hash"])]

    plain = run_cli("-c", str(config), "once", "--dry-run", cwd=tmp_path)
    assert plain.returncode == 0 and plain.stdout == ""  # off a terminal: the log's counts
    # a dry run changed nothing: its log lines say what would change (before: `changed`)
    assert "test:develop/root would change: version 2, 4 specs, +2 -1," in plain.stderr
    assert " changed" not in plain.stderr
    assert "run finished (dry run, nothing kept): 1 stack (1 would change, 0 unchanged," in (
        plain.stderr
    )
    verbose = run_cli("-c", str(config), "once", "--dry-run", "-v", cwd=tmp_path)
    assert verbose.stdout.splitlines() == [
        *(f"test:develop/root would add {h}" for h in added),
        *(f"test:develop/root would remove {h}" for h in removed),
    ]
    as_json = run_cli("-c", str(config), "once", "--dry-run", "--json", cwd=tmp_path)
    (stack,) = json.loads(as_json.stdout)["stacks"]
    assert (sorted(stack["added_hashes"]), stack["removed_hashes"]) == (added, removed)
    done = run_cli("-c", str(config), "once", "--json", cwd=tmp_path)  # a real run: counts
    (stack,) = json.loads(done.stdout)["stacks"]
    assert (stack["added"], stack["removed"]) == (2, 1) and "added_hashes" not in stack
