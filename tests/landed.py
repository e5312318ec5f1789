"""A landed version of mirrorsync, run as a process: the migration tests make a
database with an older commit's code, then open it with this one's."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conftest import REPO


def landed_source(tmp_path: Path, commit: str) -> Path:
    """``commit``'s ``src`` (a git archive of it) under ``tmp_path``, to run as a process."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "src"],
        capture_output=True,
        check=True,
    ).stdout
    target = tmp_path / f"landed-{commit[:12]}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def cli(src: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``mirrorsync -c CONFIG ARGS...`` run from ``src``, in the configuration's folder."""
    return subprocess.run(
        [sys.executable, "-m", "mirrorsync", "-c", str(config), *args],
        cwd=config.parent,
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def pending_hooks(tmp_path: Path, url: str, filtered: str = "e4s") -> str:
    """A configuration's ``webhooks:`` for a receiver that fails every delivery, so
    the events stay pending across the migration: one webhook taking every event,
    one (named ``filtered``) only the e4s stack's spec events in batches of 7. The
    secret is written to ``tmp_path/hook.secret`` by the caller."""
    secret = f"secret_file: '{tmp_path}/hook.secret'"
    return (
        "webhooks:\n"
        f"  - {{name: all, url: '{url}', {secret}}}\n"
        f"  - {{name: {filtered}, url: '{url}', {secret},"
        " events: [spec.added, spec.removed], filter: {stacks: [e4s]}, max_batch: 7}\n"
    )


def answers(src: Path, config: Path, commands: Iterable[tuple[str, ...]]) -> list[str]:
    """What each command (its arguments) prints, run from ``src``; each must succeed."""
    out = []
    for args in commands:
        done = cli(src, config, *args)
        assert done.returncode == 0, (args, done.stderr)
        out.append(done.stdout)
    return out


def rows(database: str, sql: str) -> list[tuple[Any, ...]]:
    """``sql``'s rows, sorted, read straight from the database (SQLite file or
    PostgreSQL URL): what the store wrote, not what it answers."""
    if database.startswith("postgresql"):
        import psycopg

        with psycopg.connect(database) as conn:
            return sorted(conn.execute(sql).fetchall())
    with sqlite3.connect(database) as conn:
        return sorted(conn.execute(sql).fetchall())
