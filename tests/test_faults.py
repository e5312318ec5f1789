"""Server and network faults, injected by the fixture server over real sockets.

Every fault is retried per ``http.retries``; when the retries run out only the
stack that met it fails: its previous version stays current, it gets no events,
the other stacks finish, and the run exits 1 naming it and why in one line.
"""

from __future__ import annotations

import email.utils
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli, sync
from dbstate import errors, event_counts, versions
from mirrorsync.config import Config, parse_config
from mirrorsync.fixture.build import CATALOG_NAME, build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node

STACKS = ("root", "e4s", "ml")


def nodes(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


def config_text(
    tmp_path: Path,
    server: FixtureServer,
    *,
    attempts: int = 3,
    timeout: float = 5,
    backoff_initial: float = 0.01,
    backoff_max: float = 0.05,
    buckets: str = "",
) -> str:
    return f"""
database: {tmp_path / "state.db"}
sources:
  - name: test
    kind: catalog
    url: {server.url}/{CATALOG_NAME}
    bucket_urls: {{spack-binaries: {server.url}/{buckets}}}
    manifests: none
http:
  concurrency: 8
  per_host_rate: 1000
  timeout: {timeout}
  retries: {{attempts: {attempts}, backoff_initial: {backoff_initial}, backoff_max: {backoff_max}}}
"""


def make_config(tmp_path: Path, server: FixtureServer, **kwargs: object) -> Config:
    return parse_config(config_text(tmp_path, server, **kwargs), str(tmp_path / "c.yaml"))  # type: ignore[arg-type]


def build(docroot: Path, generation: int) -> None:
    """Three stacks; each generation adds one spec to every stack."""
    build_catalog_from_specs(
        docroot,
        {"develop": {s: nodes(s, 3 + generation) for s in STACKS}},
    )


# (kind, path pattern, add_fault arguments, what the error line says)
FAULTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("status", "/develop/e4s/*", {"status": 500}, "HTTP 500"),
    ("status", "/develop/e4s/*", {"status": 503}, "HTTP 503"),
    ("status", "/develop/e4s/*", {"status": 429}, "HTTP 429"),
    ("drop", "/develop/e4s/*", {}, "connection broken: "),
    ("reset", "/develop/e4s/blobs/*", {"after_bytes": 100}, "connection broken: "),
    ("short", "/develop/e4s/blobs/*", {"after_bytes": 100}, "connection broken: "),
    ("stall", "/develop/e4s/blobs/*", {"after_bytes": 100, "delay": 1.5}, "timed out"),
    ("delay", "/develop/e4s/*", {"delay": 1.5}, "timed out"),
]
IDS = [f"{f[0]}-{f[2].get('status', '')}".rstrip("-") for f in FAULTS]


@pytest.mark.parametrize(("kind", "pattern", "args", "says"), FAULTS, ids=IDS)
def test_transient_fault_is_retried_and_the_sync_succeeds(
    tmp_path: Path,
    docroot: Path,
    server: FixtureServer,
    kind: str,
    pattern: str,
    args: dict[str, object],
    says: str,
) -> None:
    build(docroot, 0)
    config = make_config(tmp_path, server, attempts=3, timeout=0.5)
    server.add_fault(pattern, kind, times=2, **args)  # type: ignore[arg-type]
    report = sync(config)
    assert report.exit_code == 0, report.failures
    e4s = next(o for o in report.stacks if o.stack == "e4s")
    assert (e4s.status, e4s.version, e4s.added) == ("changed", 1, 3)
    assert e4s.tally.retries == 2
    assert e4s.tally.requests == 2 + 2  # manifest and blob, and two tries again
    # The server saw them too (a delayed request is logged once its delay is over).
    deadline = time.monotonic() + 5
    while server.count("/develop/e4s/*") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    faulted = [r.path for r in server.requests if r.path.startswith("/develop/e4s/")]
    assert len(faulted) == len(set(faulted)) + 2 == 4


@pytest.mark.parametrize(("kind", "pattern", "args", "says"), FAULTS, ids=IDS)
def test_persistent_fault_fails_only_that_stack_and_keeps_its_version(
    tmp_path: Path,
    docroot: Path,
    server: FixtureServer,
    kind: str,
    pattern: str,
    args: dict[str, object],
    says: str,
) -> None:
    build(docroot, 0)
    config = make_config(tmp_path, server, attempts=2, timeout=0.5)
    db = config.database_path
    assert sync(config).exit_code == 0
    before = event_counts(db)

    build(docroot, 1)  # every stack gains a spec; e4s cannot fetch it
    server.add_fault(pattern, kind, times=None, **args)  # type: ignore[arg-type]
    report = sync(config)
    assert report.exit_code == 1
    assert len(report.failures) == 1
    (line,) = report.failures
    assert line.startswith("test:develop/e4s: http://") and says in line, line
    assert "after 2 attempts" in line and "\n" not in line
    assert versions(db) == {("develop", "root"): 2, ("develop", "e4s"): 1, ("develop", "ml"): 2}
    new_events = event_counts(db) - before
    assert new_events == {
        ("spec.added", "develop", "root"): 1,
        ("spec.added", "develop", "ml"): 1,
    }
    assert says in (errors(db)[("develop", "e4s")] or "")

    # The mirror recovers: the next run catches up, with the events it owes.
    server.clear_faults()
    again = sync(config)
    assert again.exit_code == 0, again.failures
    assert versions(db)[("develop", "e4s")] == 2
    assert event_counts(db) - before == {
        ("spec.added", "develop", "root"): 1,
        ("spec.added", "develop", "ml"): 1,
        ("spec.added", "develop", "e4s"): 1,
    }
    assert errors(db)[("develop", "e4s")] is None


def test_no_retries_when_attempts_is_one(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot, 0)
    server.add_fault("/develop/e4s/*", "status", status=503, times=1)
    report = sync(make_config(tmp_path, server, attempts=1))
    assert report.exit_code == 1
    assert server.count("/develop/e4s/*") == 1
    assert "HTTP 503" in report.failures[0] and report.failures[0].endswith("after 1 attempt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_fails_that_stack_only(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot, 0)
    catalog = docroot / CATALOG_NAME
    dead = free_port()  # nothing listens there
    document = json.loads(catalog.read_text())
    for entry in document["develop"]:
        if entry["label"] == "e4s":
            entry["url"] = entry["url"].replace("s3://spack-binaries/", "s3://dead/")
    catalog.write_text(json.dumps(document))
    text = config_text(tmp_path, server, attempts=2).replace(
        "bucket_urls: {", f"bucket_urls: {{dead: 'http://127.0.0.1:{dead}/', "
    )
    report = sync(parse_config(text, "c.yaml"))
    assert report.exit_code == 1
    (line,) = report.failures
    assert line.startswith(f"test:develop/e4s: http://127.0.0.1:{dead}/develop/e4s/")
    assert "connection failed" in line and "after 2 attempts" in line
    assert {o.stack: o.status for o in report.stacks} == {
        "root": "changed",
        "e4s": "failed",
        "ml": "changed",
    }


def timed_sync(config: Config) -> tuple[float, int, list[str]]:
    started = time.monotonic()
    report = sync(config)
    return time.monotonic() - started, report.exit_code, report.failures


def test_429_retry_after_seconds_is_honoured(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot, 0)
    config = make_config(tmp_path, server, backoff_initial=0.01, backoff_max=10)
    server.add_fault(f"/{CATALOG_NAME}", "status", status=429, retry_after="2", times=1)
    seconds, code, failures = timed_sync(config)
    assert code == 0, failures
    assert server.count(f"/{CATALOG_NAME}") == 2
    # The backoff alone would have waited ~0.02 s; the server asked for 2 s.
    assert 1.9 <= seconds < 9


def test_503_retry_after_http_date_is_honoured(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot, 0)
    config = make_config(tmp_path, server, backoff_initial=0.01, backoff_max=10)
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1-2 s away
    server.add_fault(f"/{CATALOG_NAME}", "status", status=503, retry_after=when, times=1)
    seconds, code, failures = timed_sync(config)
    assert code == 0, failures
    assert 0.9 <= seconds < 9


def test_retry_after_beyond_backoff_max_fails_now_instead_of_coming_back_early(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot, 0)
    config = make_config(tmp_path, server, attempts=5, backoff_max=0.5)
    server.add_fault("/develop/e4s/*", "status", status=429, retry_after="3600", times=None)
    seconds, code, failures = timed_sync(config)
    assert code == 1
    assert server.count("/develop/e4s/*") == 1  # not asked again before the hour is up
    (line,) = failures
    assert "HTTP 429" in line and "retry after 3600s" in line and "backoff_max" in line
    assert seconds < 5


def test_cli_names_each_failed_stack_on_one_line(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot, 0)
    path = tmp_path / "c.yaml"
    path.write_text(config_text(tmp_path, server, attempts=2, timeout=1))
    server.add_fault("/develop/e4s/*", "status", status=500, times=None)
    server.add_fault("/develop/ml/blobs/*", "reset", after_bytes=10, times=None)
    done = run_cli("-c", str(path), "once", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    failed = sorted(
        line for line in done.stderr.splitlines() if line.startswith("mirrorsync: failed:")
    )
    assert len(failed) == 2
    assert failed[0].startswith("mirrorsync: failed: test:develop/e4s: http://")
    assert "HTTP 500 Internal Server Error after 2 attempts" in failed[0]
    assert failed[1].startswith("mirrorsync: failed: test:develop/ml: http://")
    assert "after 2 attempts" in failed[1] and "connection broken: " in failed[1]
    assert versions(tmp_path / "state.db") == {
        ("develop", "root"): 1,
        ("develop", "e4s"): 0,
        ("develop", "ml"): 0,
    }
    assert set(event_counts(tmp_path / "state.db")) == {
        ("release.added", "develop", None),
        ("stack.added", "develop", "root"),
        ("spec.added", "develop", "root"),
    }


@pytest.mark.parametrize("status", [403, 404, 410])
def test_client_errors_are_not_retried(
    tmp_path: Path, docroot: Path, server: FixtureServer, status: int
) -> None:
    build(docroot, 0)
    server.add_fault("/develop/e4s/*", "status", status=status, times=None)
    report = sync(make_config(tmp_path, server, attempts=5))
    (line,) = report.failures
    assert f"HTTP {status}" in line and "attempts" not in line
    assert server.count("/develop/e4s/*") == 1
