"""SIGTERM and SIGHUP (what systemd sends) end a real ``mirrorsync once`` as Ctrl-C does.

A real process syncs three stacks from the fixture server; one stack's index
stalls mid-body, so the signal finds the run with two stacks committed and one
download in flight. The process must say one line, exit 128 + the signal,
write the metrics of the interrupted run, leave no scratch directory, and the
next run must end in exactly the state of an uninterrupted sync.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, catalog_config_text, spec_nodes, sync
from dbstate import differences, event_stats, versions
from mirrorsync.config import parse_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer

STACKS = ("root", "e4s", "ml")


def config_text(tmp_path: Path, server: FixtureServer, db: str) -> str:
    extra = f"    manifests: none\nmetrics: {{textfile: {tmp_path / 'mirrorsync.prom'}}}"
    http = "http: {timeout: 60, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}"
    return catalog_config_text(tmp_path, server, extra=extra, http=http, database=db)


def wait_for(condition: object, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():  # type: ignore[operator]
        if proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before {what}: {proc.stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}")
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [
        (signal.SIGTERM, 143, "mirrorsync: terminated"),
        (signal.SIGHUP, 129, "mirrorsync: hung up"),
        (signal.SIGINT, 130, "mirrorsync: interrupted"),
    ],
    ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
def test_signal_mid_run_ends_it_cleanly_and_the_next_run_completes(
    tmp_path: Path,
    docroot: Path,
    server: FixtureServer,
    signum: signal.Signals,
    code: int,
    line: str,
) -> None:
    build_catalog_from_specs(docroot, {"develop": {s: spec_nodes(s, 5) for s in STACKS}})
    config = tmp_path / "c.yaml"
    config.write_text(config_text(tmp_path, server, "state.db"))
    db = tmp_path / "state.db"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    metrics = tmp_path / "mirrorsync.prom"
    server.add_fault("/develop/e4s/blobs/*", "stall", after_bytes=100, delay=20, times=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync", "-c", str(config), "once", "--json"],
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def two_committed_one_stalled() -> bool:
            if not db.exists() or server.count("/develop/e4s/blobs/*") < 1:
                return False
            try:
                return sum(v > 0 for v in versions(db).values()) == 2
            except Exception:  # tables not made yet
                return False

        wait_for(two_committed_one_stalled, proc, "two stacks committed, e4s downloading")
        assert list(scratch.glob("mirrorsync-*/*.index.json"))  # e4s's download, in flight
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[-1] == line and lines.count(line) == 1, err
    report = json.loads(out)  # what it did, for a program to read
    assert report["interrupted"] is True
    assert sorted(s["stack"] for s in report["stacks"]) == ["ml", "root"]
    assert list(scratch.iterdir()) == []  # the scratch directory is gone
    text = metrics.read_text()  # written for the interrupted run
    assert "mirrorsync_last_run_success 0" in text
    assert 'mirrorsync_last_run_stacks{status="changed"} 2' in text
    assert versions(db) == {("develop", "root"): 1, ("develop", "e4s"): 0, ("develop", "ml"): 1}

    # The next run completes, in exactly the state of one uninterrupted sync.
    server.clear_faults()
    done = subprocess.run(
        [sys.executable, "-m", "mirrorsync", "-c", str(config), "once"],
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "mirrorsync_last_run_success 1" in metrics.read_text()
    reference = parse_config(config_text(tmp_path, server, "reference.db"), "c.yaml")
    assert sync(reference).exit_code == 0
    assert differences(db, tmp_path / "reference.db") == {}
    per_type, most = event_stats(db)
    assert most == 1 and per_type["spec.added"] == 15
