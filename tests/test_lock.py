"""One run at a time: an flock beside the database, tested with real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from conftest import QUICK_RETRIES, REPO, catalog_config_text, run_cli
from mirrorsync.errors import EXIT_LOCKED, LockHeldError
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.lock import RunLock, hold, lock_path, read_holder
from mirrorsync.units import human_time

CATALOG = "/cache_spack_io_index.json"
REFUSAL_RE = re.compile(
    r"^mirrorsync: error: another run holds the lock on (?P<db>\S+) "
    r"since (?P<since>\d{4}-\d\d-\d\d \d\d:\d\dZ), PID (?P<pid>\d+)$"  # UTC to the minute
)


def write_config(tmp_path: Path, server: FixtureServer) -> Path:
    """Generous HTTP timeout: the slow fixture answers late, it does not fail."""
    path = tmp_path / "mirrorsync.yaml"
    http = QUICK_RETRIES.replace("timeout: 5", "timeout: 60")
    path.write_text(catalog_config_text(tmp_path, server, http=http, database="lock.db"))
    return path


def build(docroot: Path) -> None:
    build_catalog_from_specs(
        docroot,
        {"develop": {"root": [spec_node("zlib", f"1.{i}", fake_hash(f"z{i}")) for i in range(3)]}},
    )


def start_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MIRRORSYNC_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "mirrorsync", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_holder(database: Path, pid: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while read_holder(lock_path(database)).pid != pid:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.02)


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    database = tmp_path / "sub" / "x.db"
    first = RunLock(database)
    assert first.try_acquire()
    assert lock_path(database) == tmp_path / "sub" / "x.db.lock"
    holder = read_holder(lock_path(database))
    assert holder.pid == os.getpid() and holder.since is not None
    second = RunLock(database)  # its own open file description: flock conflicts
    assert not second.try_acquire()
    message = str(second.refusal())
    assert message == (
        f"another run holds the lock on {database} since {human_time(holder.since)},"
        f" PID {os.getpid()}"
    )
    first.release()
    assert second.try_acquire()
    second.release()


def test_wait_gives_up_after_its_time_or_gets_the_lock_when_freed(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    holder = RunLock(database)
    assert holder.try_acquire()

    async def attempt(wait: float) -> float:
        started = time.monotonic()
        async with hold(database, wait=wait) as lock:
            assert lock.held
        return time.monotonic() - started

    started = time.monotonic()
    with pytest.raises(LockHeldError, match=f"PID {os.getpid()}"):
        anyio.run(attempt, 0.3)
    assert time.monotonic() - started >= 0.3

    threading.Timer(0.3, holder.release).start()
    waited = anyio.run(attempt, 30.0)
    assert 0.2 <= waited < 20  # got it once freed, long before its 30 s


def test_second_once_exits_75_while_the_first_works_and_a_waiter_follows(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot)
    server.add_fault(CATALOG, "delay", delay=6)  # the first run's catalogue is slow
    config = write_config(tmp_path, server)
    database = tmp_path / "lock.db"

    first = start_cli("-c", str(config), "once", cwd=tmp_path)
    wait_for_holder(database, first.pid, first)
    second = start_cli("-c", str(config), "once", cwd=tmp_path)
    waiter = start_cli("-c", str(config), "once", "--wait", "60", cwd=tmp_path)

    out, err = second.communicate(timeout=60)
    assert second.returncode == EXIT_LOCKED, err
    assert first.poll() is None  # the refusal happened while the first was still at work
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    match = REFUSAL_RE.match(lines[0])
    assert match is not None, lines[0]
    assert match["db"] == str(database) and int(match["pid"]) == first.pid
    assert out == ""

    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "test:develop/root changed" in err
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert f"waiting up to 60s for the lock held since {match['since']}, PID {first.pid}" in err
    assert "test:develop/root unchanged" in err  # it ran after the first, on its result
    assert read_holder(lock_path(database)).pid == waiter.pid


def test_killed_holder_leaves_no_lock_behind(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot)
    # "stall" sends the headers at once, so the request shows in the server log
    # while the holder is stuck in it.
    server.add_fault(CATALOG, "stall", delay=60)
    config = write_config(tmp_path, server)
    database = tmp_path / "lock.db"

    holder = start_cli("-c", str(config), "once", cwd=tmp_path)
    wait_for_holder(database, holder.pid, holder)
    deadline = time.monotonic() + 30
    while server.count(CATALOG) == 0:
        assert time.monotonic() < deadline and holder.poll() is None
        time.sleep(0.02)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    assert read_holder(lock_path(database)).pid == holder.pid  # the file stays, stale

    started = time.monotonic()
    after = run_cli("-c", str(config), "once", "--json", cwd=tmp_path)  # no --wait
    assert after.returncode == 0, after.stderr
    assert time.monotonic() - started < 30  # not the stall: the fault was used up
    assert read_holder(lock_path(database)).pid not in (None, holder.pid)


def test_dry_run_takes_the_lock_too_and_once_names_this_holder(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot)
    config = write_config(tmp_path, server)
    database = tmp_path / "lock.db"
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    lock = RunLock(database)
    assert lock.try_acquire()
    try:
        # A dry run writes into the database, in a transaction it rolls back.
        dry = run_cli("-c", str(config), "once", "--dry-run", "--json", cwd=tmp_path)
        assert dry.returncode == EXIT_LOCKED, dry.stderr
        refused = run_cli("-c", str(config), "once", "--wait", "0.5", cwd=tmp_path)
        assert refused.returncode == EXIT_LOCKED
        waiting, refusal = refused.stderr.strip().splitlines()  # --wait says it waits
        assert waiting.startswith("INFO mirrorsync.lock: waiting up to 0.5s for the lock")
        match = REFUSAL_RE.match(refusal)
        assert match is not None and int(match["pid"]) == os.getpid(), refused.stderr
    finally:
        lock.release()


def test_webhook_retry_and_replay_take_the_run_lock(tmp_path: Path) -> None:
    database = tmp_path / "hooks.db"
    config = tmp_path / "mirrorsync.yaml"
    config.write_text(
        f"database: {database}\n"
        "sources: [{name: s, kind: mirror, url: 'http://127.0.0.1:9/m'}]\n"
        "webhooks: [{name: h, url: 'http://127.0.0.1:9/hook', secret_env: HOOK_SECRET}]\n"
    )
    env = {"HOOK_SECRET": "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="}
    held = RunLock(database)
    assert held.try_acquire()
    try:
        for args in (("retry",), ("replay", "--name", "h", "--since", "0")):
            done = run_cli("-c", str(config), "webhooks", *args, cwd=tmp_path, env=env)
            assert done.returncode == EXIT_LOCKED, done.stderr
            assert REFUSAL_RE.match(done.stderr.strip()), done.stderr
    finally:
        held.release()
