"""Spack itself makes the cache, and installs from mirrorsync's copies of it.

One Spack (the builder) installs the packages of ``tests/spack/`` and pushes
them, signed with a key from ``spack gpg create`` and unsigned, to two build
caches served on loopback. ``mirrorsync once`` syncs both and copies them.
Fresh Spacks (own scopes and install trees) then list, check and install from
the copies, over HTTP and ``file://``: no warning, and the same installed
database as a Spack that installed from upstream. Last, the builder pushes a
new version and prunes a spec, and the copies follow.

Everything here is one module (one xdist worker) so that Spack is unpacked
and the cache built once per test run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import database_value, run_cli, write_config
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import fingerprints, stop_agent
from spackcache import Spack, cache_index, require_spack, unpack, warnings

KINDS = ("signed", "unsigned")
#: Building the cache (the first test's setup) takes ~25 s alone, more on a busy machine.
pytestmark = pytest.mark.timeout(300)


@dataclass
class World:
    spack: Path  # bin/spack
    tmp: Path
    builder: Spack
    key: Path  # the builder's public key, exported
    upstream: Path  # docroot: signed/ and unsigned/ build caches
    upstream_url: str
    copies: Path  # copies/signed, copies/unsigned
    copies_url: str
    config: Path
    reference: dict[str, dict[str, object]]  # installed database, from upstream
    actors: list[Spack] = field(default_factory=list)

    def actor(self) -> Spack:
        """A fresh Spack: own scopes, caches, gpg home and install tree."""
        spack = Spack(self.spack, self.tmp / f"actor{len(self.actors)}")
        self.actors.append(spack)
        return spack


def _mirrorsync(world: World) -> None:
    done = run_cli("-c", str(world.config), "once", cwd=world.tmp, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _install_from(spack: Spack, kind: str, url: str, spec: str) -> tuple[list[str], str]:
    """What a site does with a build cache: every warning Spack printed, and what
    ``buildcache list -aLv`` listed."""
    said = [spack.run("mirror", "add", f"--{kind}", "cache", url)]
    if kind == "signed":
        said.append(spack.run("buildcache", "keys", "--install", "--trust"))
    listed = spack.run("buildcache", "list", "-aLv")
    said.append(listed)
    said.append(spack.run("install", "--cache-only", spec))
    # Checks the installed spec against the configured mirror: exit 0, nothing to rebuild.
    said.append(spack.run("buildcache", "check", spec))
    return [line for done in said for line in warnings(done)], listed.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tar = require_spack()
    tmp = tmp_path_factory.mktemp("spack")
    spack = unpack(tar, tmp / "dist")
    started: list[Spack] = []
    try:
        builder = Spack(spack, tmp / "builder")
        started.append(builder)
        builder.run("gpg", "create", "--comment", "test", "Mirrorsync Test", "test@example.invalid")
        (fingerprint,) = fingerprints(builder.gnupghome)
        builder.run("install", "msapp@1.0")
        builder.run("install", "msdata@1.0")
        upstream = tmp / "www"
        for kind, how in (("signed", ["--key", fingerprint]), ("unsigned", ["--unsigned"])):
            builder.run(
                "buildcache",
                "push",
                *how,
                "--without-build-dependencies",
                "--update-index",
                f"file://{upstream / kind}",
                "msapp@1.0",
                "msdata@1.0",
            )
        key = tmp / "key.pub"
        builder.run("gpg", "export", str(key))
        # A site's environment, concretized by Spack (reusing what it built): its spack.lock.
        environment = tmp / "env"
        builder.run("env", "create", "-d", str(environment))
        builder.run("-e", str(environment), "add", "msapp@1.0")
        builder.run("-e", str(environment), "concretize")
        # A site pins msdata@1.0 by a keeplist, as `spack buildcache prune --keeplist` reads one.
        pinned = tmp / "pinned.txt"
        pinned.write_text(
            "".join(
                f"{h}\n"
                for h, r in cache_index(upstream / "signed").items()
                if r["spec"]["name"] == "msdata" and r["spec"]["version"] == "1.0"
            )
        )
        copies = tmp / "copies"
        copies.mkdir()
        with FixtureServer(upstream) as up, FixtureServer(copies) as down:
            config = write_config(
                tmp / "mirrorsync.yaml",
                f"""
database: {database_value(tmp)}
sources:
  - name: signed
    kind: mirror
    url: {up.url}/signed
    manifests: all
    verify_signatures: true
    trusted_keys: [{key}]
  - name: unsigned
    kind: mirror
    url: {up.url}/unsigned
    manifests: all
mirrors:
  - name: copy-signed
    path: {copies / "signed"}
    source: signed
    delete_after: 0
  - name: copy-unsigned
    path: {copies / "unsigned"}
    source: unsigned
    delete_after: 0
  - name: copy-env
    path: {copies / "env"}
    source: signed
    environments: [{environment}]
    delete_after: 0
  - name: copy-pinned
    path: {copies / "pinned"}
    source: signed
    hashes: {pinned}
    keep: selected
    delete_after: 0
""",
            )
            world = World(
                spack, tmp, builder, key, upstream, up.url, copies, down.url, config, {}, started
            )
            _mirrorsync(world)
            # What a Spack that installs from upstream itself gets: the reference.
            direct = world.actor()
            said, _ = _install_from(direct, "signed", f"{up.url}/signed", "msapp@1.0")
            assert said == []
            world.reference = direct.database()
            yield world
    finally:  # the gpg-agents that signing and key imports started
        for each in started:
            stop_agent(each.gnupghome)


@pytest.mark.parametrize("kind", KINDS)
def test_copy_index_is_the_one_spack_wrote(world: World, kind: str) -> None:
    """No filter: the copy's index holds upstream's records, mstool (a build-only
    dependency Spack did not push) included, with in_buildcache false."""
    upstream = cache_index(world.upstream / kind)
    copy = cache_index(world.copies / kind)
    assert copy == upstream
    tools = [r for r in copy.values() if r["spec"]["name"] == "mstool"]
    assert len(tools) == 1 and tools[0]["in_buildcache"] is False


@pytest.mark.parametrize("via", ["http", "file"])
@pytest.mark.parametrize("kind", KINDS)
def test_spack_installs_from_the_copy_as_from_upstream(world: World, kind: str, via: str) -> None:
    url = f"{world.copies_url}/{kind}" if via == "http" else f"file://{world.copies / kind}"
    spack = world.actor()
    said, listed = _install_from(spack, kind, url, "msapp@1.0")
    # Build edges included: the copy's index has a record for every dependency.
    assert spack.database() == world.reference
    assert said == []  # not even "Missing dependency not in database"
    for spec_hash, record in cache_index(world.copies / kind).items():  # binaries only
        assert (spec_hash in listed) is record["in_buildcache"], record["spec"]["name"]
    names = {r["spec"]["name"] for r in spack.database().values() if r["installed"]}
    assert names == {"msapp", "mslib", "msdata"}


def test_a_copy_chosen_by_a_spack_environment_holds_its_closure(world: World) -> None:
    """The spack.lock Spack wrote: the copy holds its roots' link/run closure (not the
    msdata@1.0 upstream also has), and Spack installs the environment's root from it."""
    lock = json.loads((world.tmp / "env" / "spack.lock").read_text())
    upstream = cache_index(world.upstream / "signed")
    (root,) = [r["hash"] for r in lock["roots"]]
    closure, todo = set(), [root]
    while todo:
        spec_hash = todo.pop()
        if spec_hash in closure:
            continue
        closure.add(spec_hash)
        for dep in upstream[spec_hash]["spec"].get("dependencies", []):
            if {"link", "run"} & set(dep["parameters"]["deptypes"]):
                todo.append(dep["hash"])
    copy = cache_index(world.copies / "env")
    assert {h for h, r in copy.items() if r["in_buildcache"]} == closure
    assert {upstream[h]["spec"]["name"] for h in closure} == {"msapp", "mslib", "msdata"}
    spack = world.actor()
    said, _ = _install_from(spack, "signed", f"{world.copies_url}/env", "msapp@1.0")
    assert said == []
    assert root in {h for h, r in spack.database().items() if r["installed"]}


def test_copy_follows_a_push_and_a_prune_by_spack(world: World) -> None:
    """Last in the module: it changes upstream."""
    builder = world.builder
    builder.run("install", "msapp@1.1")
    (fingerprint,) = fingerprints(builder.gnupghome)
    before = cache_index(world.upstream / "signed")
    (pruned,) = [
        h
        for h, r in before.items()
        if r["spec"]["name"] == "msdata" and r["spec"]["version"] == "1.0"
    ]
    for kind, how in (("signed", ["--key", fingerprint]), ("unsigned", ["--unsigned"])):
        url = f"file://{world.upstream / kind}"
        builder.run(
            "buildcache",
            "push",
            *how,
            "--without-build-dependencies",
            "--update-index",
            url,
            "msapp@1.1",
        )
        keep = world.tmp / f"keep-{kind}.txt"
        keep.write_text(
            "".join(f"{h}\n" for h in cache_index(world.upstream / kind) if h != pruned)
        )
        builder.run("buildcache", "prune", "--keeplist", str(keep), url)
        builder.run("buildcache", "update-index", url)
    # The pruned spec's files in the copies: its manifest names its blobs.
    gone = {
        kind: [
            *(world.copies / kind / "v3/manifests/spec/msdata").glob(f"*{pruned}*"),
            *(
                world.copies / kind / "blobs/sha256" / digest[:2] / digest
                for path in (world.copies / kind / "v3/manifests/spec/msdata").glob(f"*{pruned}*")
                for digest in re.findall(r'"checksum":\s*"([0-9a-f]{64})"', path.read_text())
            ),
        ]
        for kind in KINDS
    }
    assert all(len(paths) == 3 and all(p.exists() for p in paths) for paths in gone.values())
    _mirrorsync(world)
    for kind in KINDS:
        upstream = cache_index(world.upstream / kind)
        copy = cache_index(world.copies / kind)
        assert pruned not in upstream
        assert copy == upstream
        new = [
            h
            for h, r in copy.items()
            if r["spec"]["name"] == "msapp" and r["spec"]["version"] == "1.1"
        ]
        assert len(new) == 1 and copy[new[0]]["in_buildcache"] is True
        assert pruned not in copy
        assert not [p for p in gone[kind] if p.exists()]  # delete_after: 0
        assert not list((world.copies / kind / "v3/manifests/spec/msdata").glob(f"*{pruned}*"))
        spack = world.actor()
        url = f"{world.copies_url}/{kind}"
        said, listed = _install_from(spack, kind, url, "msapp@1.1")
        assert said == []
        assert new[0] in listed and pruned not in listed

    # The pinned copy keeps what upstream pruned (keep: selected), and Spack installs it.
    assert pruned in cache_index(world.copies / "pinned")
    status = run_cli("-c", str(world.config), "status", cwd=world.tmp)
    assert re.search(rf"^mirror copy-pinned: kept msdata/{pruned[:7]} ", status.stdout, re.M), (
        status.stdout
    )
    spack = world.actor()
    said, listed = _install_from(spack, "signed", f"{world.copies_url}/pinned", "msdata@1.0")
    assert said == []
    assert pruned in listed
    installed = {h for h, r in spack.database().items() if r["installed"]}
    assert pruned in installed
