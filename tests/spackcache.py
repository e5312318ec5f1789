"""Driving a real Spack 1.1.0 offline, for tests against the real client.

The tarball (``MIRRORSYNC_SPACK_TARBALL``, else ``/work/shared/spack/`` or
``../shared/spack/`` beside the clone) is unpacked once per test run. Each
:class:`Spack` is one actor with its own scopes, caches, gpg home and install
tree, and the package repository of ``tests/spack/`` (packages with no
download and no compiler; ``mscc`` is a stand-in external compiler, since
Spack 1.x refuses to concretize with none configured). The repository is
configured under the name ``builtin``: it replaces Spack's builtin repository,
which Spack would otherwise try to clone from GitHub (and warn when it cannot)
each time it sets up gpg.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = REPO / "tests" / "spack" / "spack_repo" / "mstest"
TARBALL_NAME = "spack-1.1.0.tar.gz"


def tarball() -> Path | None:
    """The Spack tarball, if any of its known places holds it."""
    candidates = [
        os.environ.get("MIRRORSYNC_SPACK_TARBALL", ""),
        f"/work/shared/spack/{TARBALL_NAME}",
        str(REPO.parent / "shared" / "spack" / TARBALL_NAME),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def require_spack() -> Path:
    """The tarball and gpg, or skip (fail under CI, where they must be there)."""
    found = tarball()
    missing = []
    if found is None:
        missing.append(f"the Spack tarball ({TARBALL_NAME}; set MIRRORSYNC_SPACK_TARBALL)")
    if shutil.which("gpg") is None:
        missing.append("gpg")
    if missing:
        message = "needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert found is not None
    return found


def unpack(tar: Path, into: Path) -> Path:
    """Unpack Spack into ``into``, byte-compiled; return its ``bin/spack``.

    Compiled once here, since with PYTHONDONTWRITEBYTECODE set every Spack
    process would compile what it imports again (~0.5 s of CPU per command).
    """
    with tarfile.open(tar) as archive:
        archive.extractall(into, filter="tar")
    (spack,) = into.glob("**/bin/spack")
    compileall.compile_dir(str(spack.parent.parent / "lib" / "spack"), quiet=1, workers=2)
    return spack


class Spack:
    """One Spack actor: own scopes, caches, gpg home and install tree under ``home``."""

    def __init__(self, spack: Path, home: Path) -> None:
        self.spack = spack
        self.home = home
        self.tree = home / "tree"
        self.gnupghome = home / "gpg"
        system = home / "system"
        for path in (home / "user", system, home / "cache"):
            path.mkdir(parents=True, exist_ok=True)
        self.gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
        (system / "config.yaml").write_text(
            f"config:\n  install_tree:\n    root: {self.tree}\n  build_stage: [{home / 'stage'}]\n"
        )
        (system / "mirrors.yaml").write_text("mirrors:: {}\n")
        (system / "repos.yaml").write_text(f"repos::\n  builtin: {PACKAGES}\n")
        (system / "packages.yaml").write_text(
            "packages:\n"
            "  mscc:\n"
            "    buildable: false\n"
            "    externals:\n"
            "    - spec: mscc@1.0\n"
            "      prefix: /usr\n"
            "      extra_attributes:\n"
            "        compilers:\n"
            "          c: /bin/true\n"
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPACK_")}
        env.update(
            SPACK_USER_CONFIG_PATH=str(self.home / "user"),
            SPACK_SYSTEM_CONFIG_PATH=str(self.home / "system"),
            SPACK_USER_CACHE_PATH=str(self.home / "cache"),
            SPACK_GNUPGHOME=str(self.gnupghome),
        )
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``spack ARGS`` with the Python running the tests (it has clingo)."""
        done = subprocess.run(
            [sys.executable, str(self.spack), *args],
            env=self.env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"spack {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def database(self) -> dict[str, dict[str, Any]]:
        """The install tree's database: each record's spec and state (not its path or time)."""
        data = json.loads((self.tree / ".spack-db" / "index.json").read_text())
        return {
            h: {k: r.get(k) for k in ("spec", "installed", "explicit", "ref_count")}
            for h, r in data["database"]["installs"].items()
        }


def warnings(done: subprocess.CompletedProcess[str]) -> list[str]:
    """Lines of a Spack run (or of the gpg it runs) that warn."""
    return [line for line in (done.stdout + done.stderr).splitlines() if "warning" in line.lower()]


def cache_index(root: Path) -> dict[str, dict[str, Any]]:
    """The install records of the v3 build cache at ``root``, by hash."""
    manifest = json.loads((root / "v3/manifests/index/index.manifest.json").read_text())
    checksum = manifest["data"][0]["checksum"]
    blob = root / "blobs" / "sha256" / checksum[:2] / checksum
    installs: dict[str, dict[str, Any]] = json.loads(blob.read_text())["database"]["installs"]
    return installs
