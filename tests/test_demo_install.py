"""``mirrorsync demo`` in a fresh virtualenv, in an empty directory, with no network.

How the fresh virtualenv gets its dependencies without a network: it cannot
download httpx & co, so a ``.pth`` file puts the test interpreter's own
site-packages (the .venv that ``make test`` built, or any venv running pytest)
at the *end* of its ``sys.path``. A plain path line in a ``.pth`` file is not a
site directory, so the ``.pth`` files inside it (an editable install of this
checkout among them) are not processed: the only ``mirrorsync`` the fresh
environment can import is the one pip installs into it. The test checks that.

The project is installed the way a user would, ``pip install`` of a copy of the
source tree (so the wheel must carry the migrations and the demo's seed pages),
with ``--no-index --no-deps --no-build-isolation``: pip neither looks for
packages nor builds in an isolated environment, and builds with the setuptools
and wheel of the test environment (the ``dev`` extra has them).

"No network" is enforced, not assumed: an audit hook, loaded in every Python
process of the fresh environment, refuses any connection or name lookup that is
not loopback and logs every attempt; the demo's own mirror is on 127.0.0.1.
"""

from __future__ import annotations

import os
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import REPO

OFFLINE_GUARD = '''
"""Test harness: refuse non-loopback network access in this interpreter."""
import ipaddress
import os
import socket
import sys

_LOG = os.environ.get("OFFLINE_GUARD_LOG")


def _note(line):
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as out:
            out.write(line + "\\n")


def _loopback(host):
    if host in (None, "", "localhost", b"localhost"):
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _hook(event, args):
    if event == "socket.connect":
        sock, address = args
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        host = address[0]
    elif event == "socket.getaddrinfo":
        host = args[0]
    else:
        return
    if _loopback(host):
        _note(f"allowed {event} {host}")
        return
    _note(f"refused {event} {host}")
    raise PermissionError(f"offline test: {event} to {host!r} refused")


sys.addaudithook(_hook)
'''


#: What the wheel installs beside the package, under the environment's prefix.
SHIPPED = (
    "share/man/man1/mirrorsync.1",
    "share/mirrorsync/mirrorsync.yaml",
    "share/mirrorsync/site-mirror.yaml",
    "share/mirrorsync/cache-pages.yaml",
    "share/mirrorsync/systemd/mirrorsync.service",
    "share/mirrorsync/systemd/mirrorsync.timer",
    "share/mirrorsync/systemd/copy-path.conf",
)


def copy_source(dest: Path) -> Path:
    """What a source tree holds for pip (pyproject.toml, README.md, src/, and the files
    installed beside the package: man/, config/, systemd/), without caches."""
    dest.mkdir()
    shutil.copy(REPO / "pyproject.toml", dest)
    shutil.copy(REPO / "README.md", dest)
    shutil.copytree(
        REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for shipped in ("man", "config", "systemd"):
        shutil.copytree(REPO / shipped, dest / shipped)
    return dest


def _source_of(shipped: str) -> str:
    """Where an installed file comes from in the checkout."""
    name = Path(shipped).name
    if shipped.startswith("share/man/"):
        return f"man/{name}"
    return f"systemd/{name}" if "/systemd/" in shipped else f"config/{name}"


def test_the_shipped_man_page_is_the_one_help_man_prints(tmp_path: Path) -> None:
    """man/mirrorsync.1 (installed as PREFIX/share/man/man1) is generated from the parser
    and the help topics; after a change to either: mirrorsync help --man > man/mirrorsync.1"""
    done = subprocess.run(
        [sys.executable, "-m", "mirrorsync", "help", "--man"],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert (REPO / "man" / "mirrorsync.1").read_text() == done.stdout, (
        "man/mirrorsync.1 is stale: mirrorsync help --man > man/mirrorsync.1"
    )


def fresh_venv(path: Path) -> tuple[Path, Path]:
    """A new venv (no pip of its own); returns its python and site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(),
    ).stdout.strip()
    return python, Path(purelib)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything pointing Python or pip elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "MIRRORSYNC_"))
    }
    env["PIP_CONFIG_FILE"] = os.devnull  # no site pip.conf with indexes or find-links
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {**env, **extra}


def test_demo_in_a_fresh_virtualenv_in_an_empty_directory_offline(tmp_path: Path) -> None:
    source = copy_source(tmp_path / "source")
    python, purelib = fresh_venv(tmp_path / "venv")
    assert Path(sysconfig.get_paths()["purelib"]) != purelib
    # The dependencies (and pip, setuptools, wheel to install with) of the test environment.
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "zz_test_dependencies.pth").write_text("\n".join(parents) + "\n")
    (purelib / "_offline_guard.py").write_text(OFFLINE_GUARD)
    (purelib / "_offline_guard.pth").write_text("import _offline_guard\n")
    guard_log = tmp_path / "network.log"
    env = clean_env(OFFLINE_GUARD_LOG=str(guard_log), HOME=str(tmp_path))

    install = subprocess.run(
        [
            str(python),
            *("-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation"),
            *("--ignore-installed", "--no-cache-dir", str(source)),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    entry_point = tmp_path / "venv" / "bin" / "mirrorsync"
    assert entry_point.exists()
    where = subprocess.run(
        [str(python), "-c", "import mirrorsync; print(mirrorsync.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(where).is_relative_to(purelib)  # the installed copy, not the checkout
    # The man page, the example configurations and the units come with it (issue 30).
    prefix = tmp_path / "venv"
    for shipped in SHIPPED:
        assert (prefix / shipped).read_bytes() == (REPO / _source_of(shipped)).read_bytes()
    example = (prefix / "share/mirrorsync/mirrorsync.yaml").read_text()
    assert "\n# mirrors:\n#   - name: site-cache\n" in example and "\ndatabase: " in example

    # Control: the guard does refuse the outside world in this environment.
    outside = subprocess.run(
        [str(python), "-c", "import socket; socket.socket().connect(('192.0.2.1', 80))"],
        env={**env, "OFFLINE_GUARD_LOG": str(tmp_path / "control.log")},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert outside.returncode != 0 and "offline test: socket.connect" in outside.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    demo = subprocess.run(
        [str(entry_point), "demo"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Traceback" not in demo.stderr
    out = demo.stdout
    for step in ("1. A local build cache on http://127.0.0.1:", "2. The mirror changes", "Next"):
        assert step in out, out
    assert "mirrorsync once" in out  # it ends by saying what to run for the real cache
    assert (empty / "mirrorsync-demo" / "mirrorsync.db").stat().st_size > 0
    # The closing hint works when pasted elsewhere: absolute paths, this venv's mirrorsync.
    hint = next(line for line in out.splitlines() if line.strip().endswith(".yaml status"))
    pasted = subprocess.run(
        shlex.split(hint), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert pasted.returncode == 0, hint + pasted.stderr
    assert "develop/root" in pasted.stdout

    attempts = guard_log.read_text().splitlines()
    assert not [a for a in attempts if a.startswith("refused")], attempts
    # The guard was live in the demo's process and saw its loopback connections.
    assert any(a.startswith("allowed socket.connect 127.0.0.1") for a in attempts), attempts
