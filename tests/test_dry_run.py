"""``once --dry-run`` reports what would change and leaves nothing behind.

It writes inside one database transaction that it rolls back (in memory when
there is no database yet), so it neither creates files nor copies the database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from dbstate import differences, event_counts
from mirrorsync.fixture.build import CATALOG_NAME, build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node


def nodes(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


def write_config(tmp_path: Path, server: FixtureServer, db: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"database: {db}\n"
        "sources:\n"
        "  - name: test\n"
        "    kind: catalog\n"
        f"    url: {server.url}/{CATALOG_NAME}\n"
        f"    bucket_urls: {{spack-binaries: '{server.url}/'}}\n"
        "    manifests: none\n"
        "http: {timeout: 10, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}\n"
    )
    return path


def files_under(path: Path) -> set[Path]:
    return set(path.rglob("*"))


def test_dry_run_on_a_fresh_config_creates_no_file_or_directory(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("r", 3), "e4s": nodes("e", 2)}})
    state = tmp_path / "state"
    config = write_config(tmp_path, server, state / "sub" / "mirrorsync.db")
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


@pytest.fixture
def small_tmpdir(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-tmp"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_dry_run_of_a_big_database_needs_no_copy_and_changes_nothing(
    tmp_path: Path, docroot: Path, server: FixtureServer, small_tmpdir: Path
) -> None:
    big = nodes("big", 9000)
    build_catalog_from_specs(
        docroot, {"develop": {"root": nodes("r", 3), "e4s": big}}, manifests=False
    )
    db = tmp_path / "state.db"
    config = write_config(tmp_path, server, db)
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    assert db.stat().st_size > 2 * (1 << 20)  # twice what the scratch disk holds
    copy = sqlite3.connect(tmp_path / "before.db")
    source = sqlite3.connect(db)
    source.backup(copy)
    source.close()
    copy.close()

    # root loses two specs; e4s (the big index) is unchanged and not downloaded.
    build_catalog_from_specs(
        docroot, {"develop": {"root": nodes("r", 1), "e4s": big}}, manifests=False
    )
    env = {**os.environ, "TMPDIR": str(small_tmpdir)}
    dry = run_cli("-c", str(config), "once", "--dry-run", "--json", cwd=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "Traceback" not in dry.stderr
    stacks = {s["stack"]: (s["status"], s["removed"]) for s in json.loads(dry.stdout)["stacks"]}
    assert stacks == {"root": ("changed", 2), "e4s": ("unchanged", 0)}
    assert differences(tmp_path / "before.db", db) == {}
    assert not any(t == "spec.removed" for t, _, _ in event_counts(db))
    assert list(small_tmpdir.iterdir()) == []
