"""Spack installs from a copy received by ``bundle import`` on a site with no network.

Spack (the builder) makes one build cache (``tests/spack/``), served on loopback;
``mirrorsync once`` syncs and copies it (copy A); ``bundle export --full`` writes a
bundle of A. The receiving site's configuration holds only ``database:``, and no
server serves anything to it: ``bundle import`` makes copy B from the bundle
alone. B equals A byte for byte, and a fresh Spack installs from B (``file://``)
with no warning. One Spack-built cache and one Spack install (the incremental,
refused and killed imports are in test_bundles.py, with the cheaper fixture server).
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, write_config
from mirrorsync.fixture.server import FixtureServer
from spackcache import Spack, require_spack, unpack, warnings
from test_bundles import tree

#: Building the cache takes ~25 s alone, more on a busy machine.
pytestmark = pytest.mark.timeout(300)


def test_spack_installs_from_a_copy_received_by_bundle_import(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tar = require_spack()
    tmp = tmp_path_factory.mktemp("bundle-spack")
    spack = unpack(tar, tmp / "dist")
    builder = Spack(spack, tmp / "builder")
    builder.run("install", "msapp@1.0")
    upstream = tmp / "www"
    builder.run("buildcache", "push", "--unsigned", "--without-build-dependencies",
                "--update-index", f"file://{upstream / 'cache'}", "msapp@1.0")  # fmt: skip
    sender = write_config(tmp / "a.yaml", "")
    with FixtureServer(upstream) as up:
        write_config(
            sender,
            f"""
database: {tmp / "a.db"}
sources:
  - {{name: up, kind: mirror, url: "{up.url}/cache", manifests: all}}
mirrors:
  - {{name: A, path: "{tmp / "A"}", source: up}}
""",
        )
        done = run_cli("-c", str(sender), "once", cwd=tmp, timeout=120)
        assert done.returncode == 0, done.stderr
        done = run_cli("-c", str(sender), "bundle", "export", "A", str(tmp / "a.tar"), "--json",
                       cwd=tmp)  # fmt: skip
        assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout)
    assert exported["from"] == 0 and exported["to"] == 1
    # The closed side: no source, no server; only the bundle and a database path.
    receiver = write_config(tmp / "b.yaml", f"database: {tmp / 'b.db'}\n")
    done = run_cli("-c", str(receiver), "bundle", "import", str(tmp / "a.tar"), str(tmp / "B"),
                   "--json", cwd=tmp)  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout)
    assert (imported["status"], imported["version"]) == ("imported", 1)
    assert imported["files"] == exported["files"] and imported["added"] == exported["added"]
    assert tree(tmp / "B") == tree(tmp / "A") != {}

    site = Spack(spack, tmp / "site")
    said = [site.run("mirror", "add", "--unsigned", "carried", f"file://{tmp / 'B'}")]
    listed = site.run("buildcache", "list", "-aLv")
    said += [listed, site.run("install", "--cache-only", "msapp@1.0")]
    assert [line for done in said for line in warnings(done)] == []
    installed = {r["spec"]["name"] for r in site.database().values() if r["installed"]}
    assert installed == {"msapp", "mslib", "msdata"}
    for spec_hash in set(exported["added"]):
        assert spec_hash in listed.stdout
