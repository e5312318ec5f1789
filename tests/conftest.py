"""Shared test fixtures: a real fixture HTTP server on loopback, configs, CLI processes."""

from __future__ import annotations

import compileall
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

import postgres
from mirrorsync.config import Config, parse_config
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import make_signing_key, stop_agent
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.sync import RunReport, run_once
from postgres import PostgresServer


def pytest_sessionstart(session: pytest.Session) -> None:
    """Byte-compile mirrorsync's sources once: the suite starts hundreds of CLI
    processes, and with PYTHONDONTWRITEBYTECODE set (as on these machines) each
    would otherwise compile every module it imports again (read, not written)."""
    compileall.compile_dir(str(Path(__file__).parent.parent / "src"), quiet=1)
    # status's cache of the compiled configuration (mirrorsync.config_cache): in a
    # directory of the suite's own, for every process it starts, not in ~/.cache.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mirrorsync-test-cache-")


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)


REPO = Path(__file__).resolve().parent.parent

#: What every event carries (issue: events --json and webhook bodies).
EVENT_FIELDS = {
    "id",
    "type",
    "source",
    "release",
    "stack",
    "hash",
    "name",
    "version",
    "stack_version",
    "occurred_at",
}


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    path = tmp_path / "www"
    path.mkdir()
    return path


@pytest.fixture
def server(docroot: Path) -> Iterator[FixtureServer]:
    with FixtureServer(docroot) as running:
        yield running


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (a full disk on demand), unmounted afterwards; needs root."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


TEST_HTTP = """http:
  concurrency: 8
  per_host_rate: 1000
  timeout: 5
  retries: {attempts: 3, backoff_initial: 0.01, backoff_max: 0.05}
"""


#: An http section for CLI tests: short timeout, two quick attempts.
QUICK_RETRIES = (
    "http: {timeout: 5, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}\n"
)


def catalog_config_text(
    tmp_path: Path,
    server: FixtureServer,
    *,
    extra: str = "",
    http: str = TEST_HTTP,
    database: str = "state.db",
) -> str:
    """YAML for one catalogue source named ``test`` served by ``server``.

    ``extra``: more lines, indented as keys of the source (``    manifests: all``)
    or not (``limits: ...``); ``http``: the whole ``http`` section; ``database``:
    the database's file name in ``tmp_path``.
    """
    return f"""
database: {database_value(tmp_path, database)}
sources:
  - name: test
    kind: catalog
    url: {server.url}/cache_spack_io_index.json
    bucket_urls: {{spack-binaries: {server.url}/}}
{extra}
{http}"""


def catalog_config(tmp_path: Path, server: FixtureServer, *, extra: str = "") -> Config:
    """The parsed ``catalog_config_text``."""
    text = catalog_config_text(tmp_path, server, extra=extra)
    return parse_config(text, str(tmp_path / "mirrorsync.yaml"))


def spec_nodes(prefix: str, n: int) -> list[dict[str, object]]:
    """``n`` distinct spec nodes of package ``pkg-PREFIX``, versions 1.0, 1.1, ..."""
    return [spec_node(f"pkg-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


def quick_config_file(tmp_path: Path, server: FixtureServer, database: str) -> Path:
    """``tmp_path/c.yaml``: the ``test`` catalogue, no manifest crawl, quick retries."""
    text = catalog_config_text(
        tmp_path, server, extra="    manifests: none", http=QUICK_RETRIES, database=database
    )
    return write_config(tmp_path / "c.yaml", text)


def write_config(path: Path, config_text: str) -> Path:
    path.write_text(config_text)
    return path


def sync(config: Config, **kwargs: Any) -> RunReport:
    return anyio.run(lambda: run_once(config, **kwargs))


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mirrorsync`` as a real process."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    full_env.pop(
        "MIRRORSYNC_CONFIG", None
    ) if env is None or "MIRRORSYNC_CONFIG" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "mirrorsync", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Clock:
    """The store's clock, set by a test (``clock`` fixture)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Every timestamp mirrorsync stores, in this process, comes from ``clock.at``."""
    from mirrorsync.store import db

    fake = Clock(datetime.now(UTC))
    monkeypatch.setattr(db, "now", fake)
    return fake


# -- PostgreSQL -----------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL server for the session (tests/postgres.py).

    Skipped, saying why, where Debian's server binaries are not installed;
    under CI (``$CI`` set) that is a failure instead: CI installs them.
    """
    bindir = postgres.binaries()
    if bindir is None:
        reason = (
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt install postgresql)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    running = postgres.start(bindir)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own: its URL (password in it)."""
    name = postgres_server.new_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


#: This test's PostgreSQL database while a ``backend``-parametrised test runs on it.
_POSTGRES_URL: str | None = None


def database_value(tmp_path: Path, name: str = "state.db") -> str:
    """What ``database:`` says in a test's configuration: ``tmp_path/name``, or, in
    the postgresql variant of a ``backend`` test, that test's PostgreSQL database
    (for the default name ``state.db``; other names stay SQLite files)."""
    if _POSTGRES_URL is not None and name == "state.db":
        return _POSTGRES_URL
    return str(tmp_path / name)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once on SQLite and once on PostgreSQL: every configuration made
    with ``database_value`` (``catalog_config`` and its kin) points at the backend."""
    global _POSTGRES_URL
    if request.param == "sqlite":
        yield "sqlite"
        return
    _POSTGRES_URL = request.getfixturevalue("postgres_url")
    try:
        yield "postgresql"
    finally:
        _POSTGRES_URL = None


@pytest.fixture
def gpg_home(tmp_path: Path) -> Iterator[Path]:
    """A gpg home holding one new signing key (the mirror's signer)."""
    home = tmp_path / "gnupg"
    make_signing_key(home, "Mirror Signer <signer@example.org>")
    yield home
    stop_agent(home)


@pytest.fixture
def other_home(tmp_path: Path) -> Iterator[Path]:
    """A second gpg home with a key of its own: a signer nobody pinned."""
    home = tmp_path / "gnupg-other"
    make_signing_key(home, "Someone Else <else@example.org>")
    yield home
    stop_agent(home)
