"""A landed version of mirrorsync, run as a process: the migration tests make a
database with an older commit's code, then open it with this one's."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

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
