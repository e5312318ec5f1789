"""SIGKILL at several points of a real sync, then a normal run: the state of an uninterrupted sync.

Three 20,000-spec stacks are synced by real ``python -m mirrorsync once``
processes. Each killed run resumes from what the one before left. The kill
points are found from outside, without hooks in mirrorsync:

- downloading: the index blobs stall on the fixture server after 1 MiB;
- parsing: a downloaded index sits complete in the scratch directory (it is
  deleted once parsed);
- committing: an index has been parsed (its scratch file is gone) and the
  database's write lock has been held for 50 ms on end; after the first parse
  only snapshot commits write.

Then one change (a third of each stack replaced) is killed in its commit too.
The final state must equal the reference run's: every version, membership,
spec and event, each event exactly once, and no half-written version.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import REPO
from dbstate import check_consistent, differences, event_stats, versions
from mirrorsync.fixture.build import CATALOG_NAME, MirrorInfo, build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import synthetic_specs

N = 20_000
STACKS = ("root", "e4s", "ml")


def write_config(path: Path, server: FixtureServer, db: Path) -> Path:
    path.write_text(
        f"database: {db}\n"
        "sources:\n"
        "  - name: t\n"
        "    kind: catalog\n"
        f"    url: {server.url}/{CATALOG_NAME}\n"
        f"    bucket_urls: {{spack-binaries: '{server.url}/'}}\n"
        "    manifests: none\n"  # index sync only; the crawl's own kill test is in test_manifests
        "http: {timeout: 60, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.05}}\n"
    )
    return path


class Runner:
    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.config = config
        self.scratch = tmp_path / "scratch"
        self.scratch.mkdir(exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TMPDIR": str(self.scratch)}

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mirrorsync", "-q", "-c", str(self.config), "once"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self) -> int:
        proc = self.start()
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err
        return proc.returncode

    def kill_when(self, condition: Callable[[], bool], what: str) -> None:
        """Start a run and SIGKILL it the moment ``condition`` holds."""
        if not self._kill_when(condition, what):
            pytest.fail(f"the run ended before {what}")

    def kill_during_commit(
        self, db: Path, condition: Callable[[], Callable[[], bool]], what: str
    ) -> None:
        """SIGKILL a run while ``condition()`` holds (a commit under way), starting
        again from the same database when the run's commits were too short to be
        seen before it ended (a loaded machine's polling can miss them all): the
        kill must land in a commit, not after the last one."""
        snapshot = db.with_name(db.name + ".before")
        _copy_database(db, snapshot)
        for _ in range(8):
            if self._kill_when(condition(), what):
                snapshot.unlink(missing_ok=True)
                return
            print(f"a run ended before {what}: the database taken back, again")
            _copy_database(snapshot, db)  # that run committed all: take it back
        pytest.fail(f"eight runs ended before {what}")

    def _kill_when(self, condition: Callable[[], bool], what: str) -> bool:
        """Start a run and SIGKILL it the moment ``condition`` holds; False when the
        run ended by itself first."""
        proc = self.start()
        try:
            deadline = time.monotonic() + 60
            while not condition():
                if proc.poll() is not None:
                    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
                    return False
                if time.monotonic() > deadline:
                    pytest.fail(f"never saw {what}")
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        return True

    def scratch_files(self) -> Iterator[Path]:
        yield from self.scratch.glob("mirrorsync-*/*.index.json")


class Downloads:
    """Watches the scratch directory for complete index downloads, and for them to go."""

    def __init__(self, runner: Runner, sizes: set[int]) -> None:
        self.runner = runner
        self.sizes = sizes
        self.seen: set[Path] = set()

    def complete(self) -> bool:
        """An index is downloaded whole and not yet parsed (parsing deletes it)."""
        found = False
        for path in self.runner.scratch_files():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size in self.sizes:
                    self.seen.add(path)
                    found = True
        return found

    def parsed(self) -> bool:
        """Some index seen whole has been parsed since: only commits write after that."""
        self.complete()
        return any(not path.exists() for path in self.seen)


def long_write(db: Path, *, after: Callable[[], bool]) -> Callable[[], bool]:
    """True once ``after()`` holds and another process has held the write lock for 50 ms."""
    busy_since: float | None = None

    def check() -> bool:
        nonlocal busy_since
        if not after() or not db.exists():
            return False
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            busy_since = None
            return False
        except sqlite3.OperationalError:  # database is locked: a write is under way
            now = time.monotonic()
            busy_since = busy_since or now
            return now - busy_since >= 0.05
        finally:
            conn.close()

    return check


def _copy_database(source: Path, target: Path) -> None:
    """``source``'s committed state into ``target`` (SQLite's backup: WAL included)."""
    for stale in (target, target.with_name(target.name + "-wal")):
        stale.unlink(missing_ok=True)
    target.with_name(target.name + "-shm").unlink(missing_ok=True)
    if not source.exists():
        return
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        return sum(1 for v in versions(db).values() if v > 0)
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigkill_anywhere_then_a_normal_run_equals_an_uninterrupted_sync(
    tmp_path: Path, docroot: Path
) -> None:
    specs = synthetic_specs(3 * N)
    first = {s: specs[i * N : (i + 1) * N] for i, s in enumerate(STACKS)}
    # The change: each stack loses a third of its specs and gains another stack's.
    third = N // 3
    second = {
        s: first[s][third:] + first[STACKS[(i + 1) % 3]][:third] for i, s in enumerate(STACKS)
    }

    def publish(stacks: dict[str, list[dict[str, object]]]) -> dict[str, MirrorInfo]:
        return build_catalog_from_specs(docroot, {"develop": stacks}, manifests=False)["develop"]

    infos = publish(first)
    ref_db, crash_db = tmp_path / "reference.db", tmp_path / "crashed.db"
    with FixtureServer(docroot) as server:
        reference = Runner(tmp_path, write_config(tmp_path / "ref.yaml", server, ref_db))
        crashed = Runner(tmp_path, write_config(tmp_path / "crash.yaml", server, crash_db))
        assert reference.run() == 0

        # 1. Downloads in progress.
        server.add_fault("/develop/*blobs/*", "stall", after_bytes=1 << 20, delay=30, times=None)
        crashed.kill_when(
            lambda: server.count("/develop/*blobs/*") >= 2 and any(crashed.scratch_files()),
            "index downloads under way",
        )
        server.clear_faults()
        assert committed(crash_db) == 0

        # 2. An index downloaded and being parsed.
        sizes = {info.index_size for info in infos.values()}
        crashed.kill_when(Downloads(crashed, sizes).complete, "a complete download")
        assert committed(crash_db) == 0

        # 3. The first snapshot commit: an index was parsed, and a write is under way.
        crashed.kill_during_commit(
            crash_db,
            lambda: long_write(crash_db, after=Downloads(crashed, sizes).parsed),
            "a commit",
        )
        assert committed(crash_db) == 0
        check_consistent(crash_db)

        # 4. A later commit, with another stack already committed.
        crashed.kill_during_commit(
            crash_db,
            lambda: long_write(crash_db, after=lambda: committed(crash_db) >= 1),
            "a commit after the first",
        )
        assert 1 <= committed(crash_db) < 3
        check_consistent(crash_db)

        assert crashed.run() == 0
        assert differences(crash_db, ref_db) == {}
        check_consistent(crash_db)

        # 5. A change, killed while it commits, then finished.
        infos = publish(second)
        assert reference.run() == 0
        sizes = {info.index_size for info in infos.values()}
        crashed.kill_during_commit(
            crash_db,
            lambda: long_write(crash_db, after=Downloads(crashed, sizes).parsed),
            "a commit of the change",
        )
        check_consistent(crash_db)
        assert crashed.run() == 0

    check_consistent(crash_db)
    assert differences(crash_db, ref_db) == {}
    assert versions(crash_db) == dict.fromkeys((("develop", s) for s in STACKS), 2)
    per_type, most = event_stats(crash_db)
    assert most == 1  # no event twice
    assert per_type == {
        "release.added": 1,
        "stack.added": 3,
        "spec.added": 3 * N + 3 * third,
        "spec.removed": 3 * third,
    }
