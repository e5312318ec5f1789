"""Full disks, for real: a 1 MiB tmpfs under the database, or under ``$TMPDIR``.

A full database disk ends the run with one line naming the database file and
what to do, and leaves the database exactly as it was; a full scratch directory
fails the stacks whose index does not fit, naming the path, and the run goes on.
Mounting needs root; elsewhere these tests are skipped.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from conftest import quick_config_file, run_cli, spec_nodes
from dbstate import check_consistent, differences, errors, versions
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer

STACKS = ("root", "e4s", "ml")


def copy_of(db: Path, to: Path) -> Path:
    source, target = sqlite3.connect(db), sqlite3.connect(to)
    source.backup(target)
    source.close()
    target.close()
    return to


def failed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mirrorsync: failed:")]


def test_database_disk_full_ends_the_run_in_one_line_and_keeps_the_database(
    tmp_path: Path, docroot: Path, server: FixtureServer, small_tmpfs: Path
) -> None:
    db = small_tmpfs / "state.db"
    config = quick_config_file(tmp_path, server, "small/state.db")
    build_catalog_from_specs(
        docroot, {"develop": {s: spec_nodes(s, 3) for s in STACKS}}, manifests=False
    )
    first = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = copy_of(db, tmp_path / "before.db")

    # e4s gains 6,000 specs: more than the 1 MiB disk holds.
    stacks = {
        "root": spec_nodes("root", 3),
        "e4s": spec_nodes("e4s", 6000),
        "ml": spec_nodes("ml", 3),
    }
    build_catalog_from_specs(docroot, {"develop": stacks}, manifests=False)
    for _ in range(2):  # and the same again on the next run
        done = run_cli("-c", str(config), "once", cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "cannot rollback" not in done.stderr
        (line,) = failed_lines(done.stderr)
        assert line.startswith(f"mirrorsync: failed: {db}: database or disk is full"), line
        assert "free space" in line and "run again" in line
        check_consistent(db)
        assert differences(before, db) == {}  # the failing change rolled back, whole
    # With room again, the next run records the change.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert versions(db)[("develop", "e4s")] == 2


def test_scratch_full_fails_the_stack_whose_index_does_not_fit(
    tmp_path: Path, docroot: Path, server: FixtureServer, small_tmpfs: Path
) -> None:
    db = tmp_path / "state.db"
    config = quick_config_file(tmp_path, server, "state.db")
    # e4s's index is several MiB; root's and ml's a few KiB.
    stacks = {
        "root": spec_nodes("root", 3),
        "e4s": spec_nodes("e4s", 3000),
        "ml": spec_nodes("ml", 3),
    }
    build_catalog_from_specs(docroot, {"develop": stacks}, manifests=False)
    # e4s downloads last, so the small indexes never meet a full scratch disk.
    server.add_fault("/develop/e4s/blobs/*", "delay", delay=1.0, times=None)
    env = {"TMPDIR": str(small_tmpfs)}
    for _ in range(2):
        done = run_cli("-c", str(config), "once", cwd=tmp_path, env={**os.environ, **env})
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        (line,) = failed_lines(done.stderr)
        assert line.startswith(f"mirrorsync: failed: test:develop/e4s: {small_tmpfs}/"), line
        assert "cannot write the index from" in line and "set TMPDIR" in line
        assert versions(db) == {("develop", "root"): 1, ("develop", "e4s"): 0, ("develop", "ml"): 1}
        assert "cannot write the index" in (errors(db)[("develop", "e4s")] or "")
        assert list(small_tmpfs.iterdir()) == []  # nothing left behind on it
