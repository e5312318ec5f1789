"""Start-up imports only what the command uses (issue 31, start-up row).

``--version``, ``--help`` and ``status`` are run as real processes under
``python -X importtime``; each fails the test if it imported a heavy module it does
not use: the HTTP stacks (aiohttp, httpx), the PostgreSQL driver, rich, and
mirrorsync's delivery, fetch, sync and copy machinery. ``--version`` and
``--help`` load neither the configuration's parser nor the store. The figures
(milliseconds, ratio to ``python -c pass``) are printed by
``benchmarks/bench_startup.py``; a test asserts imports, never a timing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from conftest import REPO
from mirrorsync.store import Store

#: Never needed to print a version, the help or the status of the history.
HEAVY = (
    "aiohttp",
    "httpx",
    "httpcore",
    "psycopg",
    "rich",
    "mirrorsync.delivery",
    "mirrorsync.fetch",
    "mirrorsync.sync",
    "mirrorsync.mirrors.run",
    "mirrorsync.fixture",
)
#: Also not needed before a command runs: the configuration, the store, the event loop.
NOT_FOR_HELP = (
    *HEAVY,
    "yaml",
    "msgspec",
    "asyncio",
    "anyio",
    "aiosqlite",
    "mirrorsync.config",
    "mirrorsync.store",
)
CONFIG = (
    "sources:\n  - {name: s, kind: catalog, url: 'http://127.0.0.1:9/catalog.json',"
    " bucket_urls: {spack-binaries: 'http://127.0.0.1:9/'}}\n"
)
_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|(\s*)(\S+)$")


def imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m mirrorsync ARGS``: the process and every module it
    imported (importtime's report on stderr, one line per module)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MIRRORSYNC_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mirrorsync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    modules = {m[2] for line in done.stderr.splitlines() if (m := _LINE.match(line))}
    assert "mirrorsync" in modules or "mirrorsync.cli" in modules, done.stderr[-2000:]
    return done, modules


def heavy(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("once", "--help")])
def test_version_and_help_import_no_configuration_store_or_transport(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    done, modules = imported(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mirrorsync" in done.stdout
    assert heavy(modules, NOT_FOR_HELP) == []


@pytest.mark.parametrize("database", ["empty", "none"])
def test_status_imports_no_transport_delivery_or_sync(tmp_path: Path, database: str) -> None:
    db = tmp_path / "ms.db"
    (tmp_path / "mirrorsync.yaml").write_text(f"{CONFIG}database: {db}\n")
    if database == "empty":  # a database with no stack yet: status says so, exit 66

        async def create() -> None:
            store = await Store.open(db)
            await store.close()

        anyio.run(create)
    done, modules = imported("status", cwd=tmp_path)
    assert done.returncode == 66, done.stderr[-2000:]
    assert heavy(modules, HEAVY) == []
    assert "mirrorsync.config" in modules  # it did read the configuration


def test_completion_imports_no_configuration_or_store(tmp_path: Path) -> None:
    done, modules = imported("completion", "bash", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert heavy(modules, NOT_FOR_HELP) == []
