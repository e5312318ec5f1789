"""Hostile local state (issue 25, items 3, 4, 13, 14 and the migration gap).

Links planted in a copy, at export's temporary names and at the lock file; a copy
onto its own source or inside another copy; configuration from special files and
with a key given twice; read-only commands before the first sync; a database path
that is a directory; a database whose recorded migrations skip a number. Real
processes, real files, real SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from conftest import QUICK_RETRIES, REPO, run_cli, write_config
from mirrorsync.errors import EXIT_DAMAGED, EXIT_USAGE, ConfigError, StoreError
from mirrorsync.fixture.build import write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import Node, fake_hash, spec_node
from mirrorsync.lock import RunLock, lock_path

INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"


def _nodes() -> list[Node]:
    return [
        spec_node(name, "1.0", fake_hash(f"hostile-local:{name}")) for name in ("zlib", "bzip2")
    ]


def _mirror_config(tmp_path: Path, url: str, copy: str = "", *, database: str = "") -> Path:
    """A mirror source at ``url``; with ``copy``, one copy (delete_after 0) at that path."""
    text = (
        f"database: {database or tmp_path / 'state.db'}\n"
        "sources:\n"
        f"  - name: up\n    kind: mirror\n    url: {url}\n    manifests: new\n"
    )
    if copy:
        text += (
            f"mirrors:\n  - name: local\n    path: {copy}\n    source: up\n    delete_after: 0\n"
        )
    return write_config(tmp_path / "c.yaml", text + QUICK_RETRIES)


def _upstream_blobs(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "blobs").rglob("*") if p.is_file()}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _one_failure(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("mirrorsync: failed:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- item 3: links in a copy, at export's temporary name, at the lock file -------------------


def test_copy_blobs_linked_elsewhere_leaves_elsewhere_untouched(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "up", _nodes(), signed=False)
    copy = tmp_path / "copy"
    config = _mirror_config(tmp_path, f"{server.url}/up", str(copy))
    first = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (copy / INDEX_MANIFEST).is_file()
    # Someone points the copy's blobs/ at another directory holding files of its own.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sha256/aa").mkdir(parents=True)
    (elsewhere / "sha256/aa/precious").write_bytes(b"keep me")
    (elsewhere / "notes.txt").write_bytes(b"keep me too")
    before = _tree(elsewhere)
    blobs = copy / "blobs"
    os.rename(blobs, tmp_path / "old-blobs")
    os.symlink(elsewhere, blobs)

    done = run_cli("-c", str(config), "mirror", cwd=tmp_path)
    assert _tree(elsewhere) == before  # nothing deleted as unreferenced, nothing written
    assert done.returncode == 1, done.stderr
    line = _one_failure(done.stderr)
    assert f"{blobs}: a symbolic link inside the copy" in line
    assert os.path.islink(blobs)


def test_copy_prefix_directory_linked_elsewhere_writes_nothing_outside(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "up", _nodes(), signed=False)
    prefixes = {name[:2] for name in _upstream_blobs(docroot / "up")}
    copy = tmp_path / "copy"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for prefix in prefixes:  # every blob the copy will write lands in a linked directory
        (copy / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        os.symlink(elsewhere, copy / "blobs/sha256" / prefix)
    config = _mirror_config(tmp_path, f"{server.url}/up", str(copy))

    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "a symbolic link inside the copy" in _one_failure(done.stderr)
    assert list(elsewhere.iterdir()) == []
    assert all((copy / "blobs/sha256" / p).is_symlink() for p in prefixes)
    assert not (copy / INDEX_MANIFEST).exists()


def test_export_pages_never_writes_through_a_link_at_a_temporary_name(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "up", _nodes(), signed=False)
    config = _mirror_config(tmp_path, f"{server.url}/up")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    out = tmp_path / "pages"
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"untouched")
    for name in ("zlib", "bzip2"):  # the temporary name export used before
        (out / "default" / name).mkdir(parents=True)
        os.symlink(victim, out / "default" / name / ".specs.md.tmp")

    done = run_cli(
        "-c", str(config), "export", "pages", "--release", "default", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert victim.read_bytes() == b"untouched"
    for name in ("zlib", "bzip2"):
        page = out / "default" / name / "specs.md"
        assert not page.is_symlink()
        assert (
            f"package: {name}".encode() in page.read_bytes() or name.encode() in page.read_bytes()
        )
        leftovers = {p.name for p in page.parent.iterdir()} - {"specs.md", ".specs.md.tmp"}
        assert leftovers == set()


def test_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    target = tmp_path / "precious.txt"
    target.write_bytes(b"not a lock file")
    os.symlink(target, lock_path(database))
    with pytest.raises(StoreError, match="the lock file is a symbolic link"):
        RunLock(database).try_acquire()
    assert target.read_bytes() == b"not a lock file"

    config = _mirror_config(tmp_path, "file:///nonexistent/up", database=str(database))
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"mirrorsync: error: {lock_path(database)}: the lock file is a symbolic link; "
        "mirrorsync never follows it: remove the link"
    ]
    assert target.read_bytes() == b"not a lock file"
