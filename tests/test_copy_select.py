"""A copy chosen by environment, and kept after upstream prunes (issue 26).

Upstream is a v3 build cache served on loopback; two Spack environments'
lockfiles (v6 as Spack 1.1 writes, v4 with the older ``type`` dependency form)
and a hash list choose what the copy holds: their roots' link/run closure and
the listed hashes, never a build-only dependency. ``keep: selected`` holds a
pinned spec after upstream deletes it, still under the Admission rule;
``keep: 90d`` lets it go 90 days after it left upstream (the copy's clock,
injected). Real CLI processes where the clock need not move.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from conftest import QUICK_RETRIES, database_value, run_cli, write_config
from mirrorsync.config import Config, load_config
from mirrorsync.errors import FormatError
from mirrorsync.fixture.build import MirrorInfo, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import fingerprints, make_signing_key, stop_agent
from mirrorsync.fixture.specs import Node, fake_hash, spec_node
from mirrorsync.formats.lockfile import parse_keeplist, parse_lockfile
from mirrorsync.mirrors import MirrorOutcome, run_mirrors
from mirrorsync.store import Store
from mirrorsync.store import mirrors as store_mirrors
from mirrorsync.sync import run_once

INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"


def _node(name: str, deps: dict[str, list[str]] | None = None) -> Node:
    """A spec whose dependencies have the given deptypes (name -> types)."""
    node = spec_node(
        name, "1.0", fake_hash(name), dependencies=[(d, fake_hash(d)) for d in deps or {}]
    )
    for dep in node.get("dependencies", []):
        dep["parameters"]["deptypes"] = (deps or {})[dep["name"]]
    return node


# app needs lib (link) and runner (run), and tool to build only; lib needs zlib.
NODES = [
    _node("zlib"),
    _node("tool"),
    _node("runner"),
    _node("lib", {"zlib": ["build", "link"]}),
    _node("app", {"lib": ["build", "link"], "runner": ["run"], "tool": ["build"]}),
    _node("svc", {"zlib": ["build", "link"]}),
    _node("pinned"),
    _node("extra"),
    _node("other"),
]
BY_NAME = {n["name"]: n for n in NODES}


def _lockfile_v6(roots: list[str], extra: Sequence[Node] = ()) -> bytes:
    """A spack.lock as Spack 1.1 writes it (``Environment._to_lockfile_dict``)."""
    specs: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        node = BY_NAME[todo.pop()]
        specs[node["hash"]] = node
        todo += [d["name"] for d in node.get("dependencies", [])]
    for node in extra:
        specs[node["hash"]] = node
    doc = {
        "_meta": {"file-type": "spack-lockfile", "lockfile-version": 6, "specfile-version": 5},
        "spack": {"version": "1.1.0", "type": "release"},
        "roots": [{"hash": fake_hash(r), "spec": r} for r in roots]
        + [{"hash": n["hash"], "spec": n["name"]} for n in extra if "external" not in n],
        "concrete_specs": specs,
    }
    return json.dumps(doc, indent=2).encode()


def _lockfile_v4(roots: list[str]) -> bytes:
    """Spack 0.19's form: dependency types under ``type``, no ``parameters``."""
    doc = json.loads(_lockfile_v6(roots))
    doc["_meta"] = {"file-type": "spack-lockfile", "lockfile-version": 4, "specfile-version": 3}
    for node in doc["concrete_specs"].values():
        for dep in node.get("dependencies", []):
            dep["type"] = dep.pop("parameters")["deptypes"]
    return json.dumps(doc).encode()


GHOST = spec_node("ghost", "1.0", fake_hash("ghost"))  # in a lockfile, never upstream
CMAKE = {**spec_node("cmake", "3.30", fake_hash("cmake")), "external": {"path": "/usr"}}


def _environments(tmp_path: Path) -> tuple[Path, Path]:
    env_a = tmp_path / "env-a"
    env_a.mkdir()
    (env_a / "spack.lock").write_bytes(_lockfile_v6(["app"], [GHOST, CMAKE]))
    lock_b = tmp_path / "b.lock"
    lock_b.write_bytes(_lockfile_v4(["svc", "pinned"]))
    return env_a, lock_b


def _upstream(docroot: Path, names: set[str]) -> MirrorInfo:
    shutil.rmtree(docroot / "m", ignore_errors=True)  # a prune deletes the files too
    return write_v3_mirror(docroot / "m", [n for n in NODES if n["name"] in names], signed=False)


def _config(tmp_path: Path, server: FixtureServer, copy: str) -> Path:
    return write_config(
        tmp_path / "c.yaml",
        f"""
database: {database_value(tmp_path)}
sources:
  - name: site
    kind: mirror
    url: {server.url}/m
    manifests: all
mirrors:
  - name: local
    path: {tmp_path / "copy"}
    source: site
    delete_after: 0
{copy}
{QUICK_RETRIES}""",
    )


def _signed_text(data: bytes) -> str:
    text = data.decode()
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        text = text.split("\n\n", 1)[1].split("-----BEGIN PGP SIGNATURE-----")[0]
    return text


def _binaries(copy: Path) -> dict[str, str]:
    """name -> hash of each binary the copy's index lists; each file there and checked."""
    (record,) = json.loads((copy / INDEX_MANIFEST).read_bytes())["data"]
    blob = copy / "blobs/sha256" / record["checksum"][:2] / record["checksum"]
    out = {}
    for spec_hash, install in json.loads(blob.read_bytes())["database"]["installs"].items():
        if not install["in_buildcache"]:
            continue
        name = install["spec"]["name"]
        out[name] = spec_hash
        rel = f"v3/manifests/spec/{name}/{name}-1.0-{spec_hash}.spec.manifest.json"
        for r in json.loads(_signed_text((copy / rel).read_bytes()))["data"]:
            data = (copy / "blobs/sha256" / r["checksum"][:2] / r["checksum"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == r["checksum"]
    return out


def test_lockfile_and_keeplist_parsers() -> None:
    lock = parse_lockfile(_lockfile_v6(["app"], [GHOST, CMAKE]), "spack.lock")
    assert lock.version == 6
    # The roots and their link/run closure: never tool (build only), never an external.
    assert lock.wanted == {fake_hash(n) for n in ("app", "lib", "zlib", "runner", "ghost")}
    assert parse_lockfile(_lockfile_v4(["app"])).wanted == {
        fake_hash(n) for n in ("app", "lib", "zlib", "runner")
    }
    for bad, why in (
        (b"", "spack.lock"),
        (b"[]", "spack.lock"),
        (b'{"_meta": {"lockfile-version": 3}, "roots": [], "concrete_specs": {}}', "version 3"),
        (
            b'{"_meta": {"lockfile-version": 6}, "roots": [{"hash": "../x"}], "concrete_specs": {}}',
            "hash",
        ),
        (b"\xff\xfe", "spack.lock"),
    ):
        with pytest.raises(FormatError, match=why):
            parse_lockfile(bad, "x/spack.lock")
    # A keeplist as 'spack buildcache prune --keeplist' reads it.
    assert parse_keeplist(f"{fake_hash('a')}\n  /{fake_hash('b')}  \n".encode()) == {
        fake_hash("a"),
        fake_hash("b"),
    }
    for bad in (b"", b"abc\n", f"{fake_hash('a')}\n\n".encode()):
        with pytest.raises(FormatError):
            parse_keeplist(bad)


def test_a_lockfile_that_cannot_be_read_is_one_line_exit_2(
    tmp_path: Path, server: FixtureServer
) -> None:
    env = tmp_path / "env"
    env.mkdir()
    config = _config(tmp_path, server, f"    environments: [{env}]")
    checked = run_cli("-c", str(config), "config", "check", cwd=tmp_path)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    (line,) = checked.stderr.strip().splitlines()
    assert "mirrors[0].environments[0]" in line and str(env / "spack.lock") in line
    (env / "spack.lock").write_text('{"_meta": {"lockfile-version": 6}}')
    checked = run_cli("-c", str(config), "config", "check", cwd=tmp_path)
    assert checked.returncode == 2
    (line,) = checked.stderr.strip().splitlines()
    assert str(env / "spack.lock") in line and "malformed spack.lock" in line
    config = _config(tmp_path, server, "    hashes: [not-a-hash]")
    checked = run_cli("-c", str(config), "status", cwd=tmp_path)  # at load, any command
    assert checked.returncode == 2 and "mirrors[0].hashes[0]" in checked.stderr
    config = _config(tmp_path, server, '    hashes: "/tmp/keep\\0list"')
    checked = run_cli("-c", str(config), "config", "check", cwd=tmp_path)
    assert checked.returncode == 2, checked.stderr
    (line,) = checked.stderr.strip().splitlines()
    assert "mirrors[0].hashes: cannot read the keeplist" in line


@pytest.mark.usefixtures("backend")
def test_two_environments_and_a_hash_list_choose_the_copy_and_keep_selected_holds_a_pruned_spec(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    env_a, lock_b = _environments(tmp_path)
    _upstream(docroot, {n["name"] for n in NODES})
    keeplist = tmp_path / "keep.txt"
    keeplist.write_text(f"/{fake_hash('extra')}\n")
    copy_text = f"    environments: [{env_a}, {lock_b}]\n    hashes: {keeplist}\n    keep: selected"
    config = _config(tmp_path, server, copy_text)
    copy = tmp_path / "copy"

    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # Exactly the two environments' link/run closure and the listed hash.
    expected = {"app", "lib", "zlib", "runner", "svc", "pinned", "extra"}
    assert set(_binaries(copy)) == expected
    ghost = f"wanted but not in upstream: ghost/{fake_hash('ghost')}"
    check = run_cli("-c", str(config), "status", "--check", cwd=tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert check.stdout.strip().splitlines() == [f"mirror local: {ghost}"]
    dry = run_cli("-c", str(config), "mirror", "--dry-run", cwd=tmp_path)
    assert f"mirror local: wanted but not in upstream: ghost {fake_hash('ghost')}" in dry.stdout

    # Globs and environments are a union; exclude_packages comes last.
    _config(tmp_path, server, copy_text + "\n    packages: [other]\n    exclude_packages: [extra]")
    as_json = run_cli("-c", str(config), "mirror", "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    (outcome,) = json.loads(as_json.stdout)
    assert outcome["wanted_missing"] == [{"hash": fake_hash("ghost"), "name": "ghost"}]
    assert set(_binaries(copy)) == expected - {"extra"} | {"other"}
    copy_text += "\n    packages: [other]"  # a glob does not keep what upstream prunes
    _config(tmp_path, server, copy_text)
    assert run_cli("-c", str(config), "mirror", cwd=tmp_path).returncode == 0
    assert set(_binaries(copy)) == expected | {"other"}

    # Upstream prunes pinned (and extra, which the keeplist names): the copy keeps both.
    _upstream(docroot, {n["name"] for n in NODES} - {"pinned", "extra", "other"})
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(_binaries(copy)) == expected
    status = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert f"mirror local: kept pinned/{fake_hash('pinned')[:7]}" in status.stdout
    assert f"mirror local: kept extra/{fake_hash('extra')[:7]}" in status.stdout
    again = run_cli("-c", str(config), "mirror", cwd=tmp_path)
    assert f"mirror local: kept pinned {fake_hash('pinned')} (left upstream " in again.stdout
    as_json = run_cli("-c", str(config), "mirror", "--json", cwd=tmp_path)
    (outcome,) = json.loads(as_json.stdout)
    assert outcome["status"] == "unchanged"
    assert [k["name"] for k in outcome["kept"]] == ["extra", "pinned"]
    metrics = tmp_path / "m.prom"
    _config(tmp_path, server, copy_text + f"\nmetrics:\n  textfile: {metrics}")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    assert 'mirrorsync_mirror_kept_specs{mirror="local"} 2' in metrics.read_text()
    assert 'mirrorsync_mirror_wanted_missing_specs{mirror="local"} 1' in metrics.read_text()

    # The environment no longer names pinned: it leaves the copy; history says when.
    lock_b.write_bytes(_lockfile_v4(["svc"]))
    _config(tmp_path, server, copy_text)
    assert run_cli("-c", str(config), "mirror", cwd=tmp_path).returncode == 0
    assert set(_binaries(copy)) == expected - {"pinned"}
    assert not list(copy.rglob(f"*{fake_hash('pinned')}*"))
    history = {h["name"]: h for h in _history(load_config(str(config)))}
    assert history["pinned"]["left_copy_at"] is not None
    assert history["extra"]["left_copy_at"] is None
    assert history["other"]["left_copy_at"] == history["other"]["left_upstream_at"]


def _history(config: Config) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with await Store.open(config.database_path) as store:
            return await store_mirrors.kept_history(store, "local")

    return anyio.run(go)


def _mirror(config: Config, now: datetime) -> MirrorOutcome:
    async def go() -> list[MirrorOutcome]:
        async with await Store.open(config.database_path) as store:
            return await run_mirrors(config, store, Path(config.path).parent, clock=lambda: now)

    (outcome,) = anyio.run(go)
    assert outcome.status != "failed", outcome.error
    return outcome


def test_keep_a_duration_holds_a_pruned_spec_that_long_after_it_left_upstream(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    _upstream(docroot, {"zlib", "svc", "pinned", "other"})
    path = _config(tmp_path, server, "    packages: [svc, pinned]\n    keep: 90d")
    config = load_config(str(path))
    no_mirrors = msgspec.structs.replace(config, mirrors=[])
    assert anyio.run(lambda: run_once(no_mirrors)).exit_code == 0
    copy = tmp_path / "copy"
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    _mirror(config, t0)
    assert set(_binaries(copy)) == {"svc", "zlib", "pinned"}

    _upstream(docroot, {"zlib", "svc", "other"})
    assert anyio.run(lambda: run_once(no_mirrors)).exit_code == 0
    left = _mirror(config, t0 + timedelta(days=1))
    assert [k.name for k in left.kept] == ["pinned"]
    assert set(_binaries(copy)) == {"svc", "zlib", "pinned"}
    assert _mirror(config, t0 + timedelta(days=90, hours=23)).kept  # 89.96 days after it left
    assert set(_binaries(copy)) == {"svc", "zlib", "pinned"}
    gone = _mirror(config, t0 + timedelta(days=91, hours=1))
    assert gone.kept == [] and gone.removed == 1
    assert set(_binaries(copy)) == {"svc", "zlib"}
    assert not list(copy.rglob(f"*{fake_hash('pinned')}*"))
    (entry,) = _history(config)
    assert (entry["left_upstream_at"], entry["left_copy_at"]) == (
        "2026-12-02T00:00:00.000000Z",
        "2027-03-02T01:00:00.000000Z",
    )


def test_a_kept_spec_stays_under_the_admission_rule(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """A kept spec's manifest in the copy must still be the bytes the crawl verified:
    one changed in the copy is left out (upstream has none to fetch again)."""
    _upstream(docroot, {"zlib", "svc", "pinned"})
    text = f"    hashes: [{fake_hash('pinned')}]\n    keep: selected\n    on_error: skip"
    path = _config(tmp_path, server, text)
    done = run_cli("-c", str(path), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "copy"
    assert set(_binaries(copy)) == {"pinned"}
    _upstream(docroot, {"zlib", "svc"})
    assert run_cli("-c", str(path), "once", cwd=tmp_path).returncode == 0
    assert set(_binaries(copy)) == {"pinned"}
    (manifest,) = copy.rglob(f"*{fake_hash('pinned')}.spec.manifest.json")
    manifest.write_text(manifest.read_text().replace('"version"', '"version" '))
    _config(tmp_path, server, text.replace("]", f", {fake_hash('svc')}]"))  # a new plan
    done = run_cli("-c", str(path), "mirror", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (outcome,) = json.loads(done.stdout)
    (left,) = outcome["left_out"]
    assert left["name"] == "pinned" and "not what was verified" in left["reason"]
    assert set(_binaries(copy)) == {"svc", "zlib"}
    assert outcome["kept"] == []


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")
def test_a_kept_signed_spec_keeps_its_signer_in_the_copy_key_index(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    home = tmp_path / "gnupg"
    make_signing_key(home, "Mirror Signer <signer@example.org>")
    try:
        (fingerprint,) = fingerprints(home)
        nodes = [n for n in NODES if n["name"] in ("zlib", "svc", "pinned")]
        write_v3_mirror(docroot / "m", nodes, gpg_home=home)
        text = (
            f"    hashes: [{fake_hash('pinned')}, {fake_hash('svc')}]\n    keep: selected\n"
            "  # signed"
        )
        path = _config(tmp_path, server, text)
        path.write_text(
            path.read_text().replace(
                "    manifests: all",
                f"    manifests: all\n    verify_signatures: true\n    trusted_keys: [{fingerprint}]",
            )
        )
        assert run_cli("-c", str(path), "once", cwd=tmp_path).returncode == 0
        shutil.rmtree(docroot / "m")
        write_v3_mirror(docroot / "m", [n for n in nodes if n["name"] != "pinned"], gpg_home=home)
        done = run_cli("-c", str(path), "once", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    finally:
        stop_agent(home)
    copy = tmp_path / "copy"
    assert set(_binaries(copy)) == {"pinned", "svc", "zlib"}
    (manifest,) = copy.rglob(f"*{fake_hash('pinned')}.spec.manifest.json")
    assert manifest.read_bytes().startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
    (record,) = json.loads((copy / "v3/manifests/key/keys.manifest.json").read_bytes())["data"]
    key_index = copy / "blobs/sha256" / record["checksum"][:2] / record["checksum"]
    assert list(json.loads(key_index.read_bytes())["keys"]) == [fingerprint]
