"""A copy on disk: checked (``verify --mirror``), repaired, missed when gone, and
readable by those who serve it whatever the umask of the process that wrote it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, run_cli, write_config
from mirrorsync.fixture.server import FixtureServer
from test_mirrors import _check_copy, _config_text, _graph, _publish_upstream


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users may enter (pytest's own tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mirrorsync-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _modes(copy: Path) -> tuple[set[int], set[int]]:
    """The permission bits of every file and every directory under the copy."""
    file_modes, dir_modes = set(), {stat.S_IMODE(copy.stat().st_mode)}
    for top, dirs, names in os.walk(copy):
        for d in dirs:
            dir_modes.add(stat.S_IMODE(os.lstat(Path(top) / d).st_mode))
        for n in names:
            file_modes.add(stat.S_IMODE(os.lstat(Path(top) / n).st_mode))
    return file_modes, dir_modes


def test_a_copy_made_under_umask_0077_is_readable_by_another_user(
    tmp_path: Path, docroot: Path, server: FixtureServer, shared_dir: Path
) -> None:
    _publish_upstream(docroot, _graph(), None)
    text = _config_text(tmp_path, server, "").replace(
        str(tmp_path / "copy"), str(shared_dir / "copy")
    )
    config = write_config(tmp_path / "c.yaml", text)
    done = subprocess.run(
        [sys.executable, "-m", "mirrorsync", "-c", str(config), "once"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0o077),
    )
    assert done.returncode == 0, done.stderr
    copy = shared_dir / "copy"
    assert len(_check_copy(copy)) == 7
    file_modes, dir_modes = _modes(copy)
    assert file_modes == {0o644} and dir_modes == {0o755}, (file_modes, dir_modes)
    if os.geteuid() != 0:
        return
    paths = sorted(str(p) for p in copy.rglob("*") if p.is_file())
    as_nobody = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sha256sum", *paths],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_nobody.returncode == 0, as_nobody.stderr
    assert len(as_nobody.stdout.splitlines()) == len(paths) > 10


def test_mode_sets_the_files_and_directories_permissions(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    _publish_upstream(docroot, _graph(), None)
    config = write_config(tmp_path / "c.yaml", _config_text(tmp_path, server, '    mode: "0640"'))
    old = os.umask(0o022)
    try:
        done = run_cli("-c", str(config), "once", cwd=tmp_path)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    file_modes, dir_modes = _modes(tmp_path / "copy")
    assert file_modes == {0o640} and dir_modes == {0o750}, (file_modes, dir_modes)
    bad = write_config(tmp_path / "bad.yaml", _config_text(tmp_path, server, '    mode: "0999"'))
    checked = run_cli("-c", str(bad), "config", "check", cwd=tmp_path)
    assert checked.returncode == 2 and "mode" in checked.stderr, checked.stderr
