"""Local copies (config ``mirrors:``): end to end over real HTTP into real directories."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from conftest import QUICK_RETRIES, database_value, run_cli, write_config
from mirrorsync.config import Config, parse_config
from mirrorsync.errors import ConfigError
from mirrorsync.fixture.build import write_catalog, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import export_public_key, fingerprints
from mirrorsync.fixture.specs import Node, fake_hash, spec_node
from mirrorsync.mirrors import MirrorOutcome, run_mirrors
from mirrorsync.store import Store
from mirrorsync.sync import run_once
from mirrorsync.units import human_size

INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"


def _h(name: str, tag: str = "") -> str:
    return fake_hash(f"mirror-test:{name}:{tag}")


def _graph() -> dict[str, Node]:
    """A small DAG with every kind of edge a copy must tell apart.

    py-numpy -> python (build+run), cmake (build+link), gcc (build only);
    python -> zlib (link), openssl (link; an external: in_buildcache false);
    zlib -> gcc (build only); hdf5 is on another OS; py-scipy -> py-numpy.
    """
    n: dict[str, Node] = {}

    def add(name: str, deps: list[str] = (), **kw: Any) -> None:  # type: ignore[assignment]
        n[name] = spec_node(
            name, "1.0", _h(name), dependencies=[(d, n[d]["hash"]) for d in deps], **kw
        )

    add("gcc")
    add("openssl")
    add("zlib", ["gcc"])
    add("python", ["zlib", "openssl", "gcc"])
    add("cmake", ["zlib", "gcc"])
    add("py-numpy", ["python", "cmake", "gcc"])
    add("py-scipy", ["py-numpy", "python", "gcc"])
    add("hdf5", ["zlib", "gcc"], os="rhel8")
    return n


def _publish_upstream(docroot: Path, nodes: dict[str, Node], gpg_home: Path | None) -> None:
    """develop/ holds everything; develop/e4s the python part. openssl is an external."""
    cached = [v for k, v in nodes.items() if k != "openssl"]
    external = [nodes["openssl"]] if "openssl" in nodes else []
    write_v3_mirror(docroot / "develop", cached, uncached=external, gpg_home=gpg_home)
    e4s = [v for k, v in nodes.items() if k in ("zlib", "python", "py-numpy", "cmake")]
    write_v3_mirror(docroot / "develop/e4s", e4s, uncached=external, gpg_home=gpg_home)
    write_catalog(docroot, {"develop": {"root": "develop", "e4s": "develop/e4s"}})


def _config_text(tmp_path: Path, server: FixtureServer, mirror: str, source: str = "") -> str:
    return f"""
database: {database_value(tmp_path)}
sources:
  - name: test
    kind: catalog
    url: {server.url}/cache_spack_io_index.json
    bucket_urls: {{spack-binaries: {server.url}/}}
    manifests: new
{source}
mirrors:
  - name: local
    path: {tmp_path / "copy"}
    source: test
    release: develop
{mirror}
http: {{concurrency: 4, per_host_rate: 1000, timeout: 5,
        retries: {{attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}}}
"""


def _config(tmp_path: Path, server: FixtureServer, mirror: str = "") -> Config:
    return parse_config(_config_text(tmp_path, server, mirror), str(tmp_path / "c.yaml"))


def _copy_index(copy: Path) -> dict[str, Any]:
    manifest = json.loads((copy / INDEX_MANIFEST).read_bytes())
    (record,) = manifest["data"]
    blob = copy / "blobs/sha256" / record["checksum"][:2] / record["checksum"]
    data = blob.read_bytes()
    assert hashlib.sha256(data).hexdigest() == record["checksum"]
    assert len(data) == record["contentLength"]
    installs: dict[str, Any] = json.loads(data)["database"]["installs"]
    return installs


def _index_checksum(docroot: Path, rel: str) -> str:
    checksum: str = json.loads((docroot / rel / INDEX_MANIFEST).read_bytes())["data"][0]["checksum"]
    return checksum


def _upstream_installs(docroot: Path, rel: str) -> dict[str, Any]:
    checksum = _index_checksum(docroot, rel)
    blob = docroot / rel / "blobs/sha256" / checksum[:2] / checksum
    installs: dict[str, Any] = json.loads(blob.read_bytes())["database"]["installs"]
    return installs


def _manifest_records(data: bytes) -> list[dict[str, Any]]:
    text = data.decode()
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        body = text.split("\n\n", 1)[1].split("-----BEGIN PGP SIGNATURE-----")[0]
        text = "\n".join(line[2:] if line.startswith("- ") else line for line in body.split("\n"))
    records: list[dict[str, Any]] = json.loads(text)["data"]
    return records


def _check_copy(copy: Path) -> set[str]:
    """Everything the copy's index names is there and checks out; returns its binaries."""
    binaries = set()
    for spec_hash, install in _copy_index(copy).items():
        if not install["in_buildcache"]:
            continue
        binaries.add(spec_hash)
        spec = install["spec"]
        rel = f"v3/manifests/spec/{spec['name']}/{spec['name']}-{spec['version']}-{spec_hash}"
        for record in _manifest_records((copy / f"{rel}.spec.manifest.json").read_bytes()):
            blob = copy / "blobs/sha256" / record["checksum"][:2] / record["checksum"]
            data = blob.read_bytes()
            assert len(data) == record["contentLength"], blob
            assert hashlib.sha256(data).hexdigest() == record["checksum"], blob
    return binaries


def _mirror(config: Config, now: datetime | None = None) -> list[MirrorOutcome]:
    async def go() -> list[MirrorOutcome]:
        async with await Store.open(config.database_path) as store:
            return await run_mirrors(
                config,
                store,
                Path(config.path).parent,
                clock=(lambda: now) if now else lambda: datetime.now(UTC),
            )

    return anyio.run(go)


def _sync(config: Config) -> None:
    """Sync the sources only (the copies are left to the test)."""
    no_mirrors = msgspec.structs.replace(config, mirrors=[])
    report = anyio.run(lambda: run_once(no_mirrors))
    assert report.exit_code == 0, report.failures


@pytest.fixture
def upstream(server: FixtureServer) -> FixtureServer:
    return server


def _blob_gets(server: FixtureServer) -> list[str]:
    """Paths of blobs served whole (status 200) to the copy."""
    return [r.path for r in server.requests if "/blobs/" in r.path and r.status == 200]


# -- the copy ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")
@pytest.mark.usefixtures("backend")
def test_filtered_copy_is_the_selection_and_its_runtime_closure_and_reads_back(
    tmp_path: Path, docroot: Path, upstream: FixtureServer, gpg_home: Path
) -> None:
    nodes = _graph()
    nodes_by_hash = {n["hash"]: n for n in nodes.values()}
    _publish_upstream(docroot, nodes, gpg_home)
    (fingerprint,) = fingerprints(gpg_home)
    config = write_config(
        tmp_path / "c.yaml",
        _config_text(
            tmp_path,
            upstream,
            '    packages: ["py-num*"]',
            f"    verify_signatures: true\n    trusted_keys: [{fingerprint}]",
        ),
    )
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "copy"

    installs = _copy_index(copy)
    # py-numpy, its run dep python, link deps cmake and zlib, python's external openssl;
    # not hdf5, not py-scipy (a dependent). gcc, a build-only dependency of all of
    # them, is listed as Spack lists a dependency it did not push: upstream's record
    # with in_buildcache false (no binary), so every hash the index names has a record.
    want = {nodes[k]["hash"] for k in ("py-numpy", "python", "cmake", "zlib", "openssl")}
    gcc = nodes["gcc"]["hash"]
    assert set(installs) == want | {gcc}
    upstream_root = _upstream_installs(docroot, "develop")
    upstream_e4s = _upstream_installs(docroot, "develop/e4s")
    for spec_hash, install in installs.items():  # upstream's records, unchanged
        if spec_hash != gcc:
            assert install in (upstream_root.get(spec_hash), upstream_e4s.get(spec_hash))
    assert installs[nodes["openssl"]["hash"]]["in_buildcache"] is False
    assert upstream_root[gcc]["in_buildcache"] is True
    assert installs[gcc] == {**upstream_root[gcc], "in_buildcache": False}
    for install in installs.values():  # no dependency without a record
        assert {d["hash"] for d in install["spec"].get("dependencies", [])} <= set(installs)
    binaries = _check_copy(copy)
    assert binaries == want - {nodes["openssl"]["hash"]}
    for spec_hash in binaries:  # manifests byte for byte (clear-signatures stay valid)
        spec = installs[spec_hash]["spec"]
        rel = f"v3/manifests/spec/{spec['name']}/{spec['name']}-1.0-{spec_hash}.spec.manifest.json"
        # Each stack signs its own manifests: the copy holds one of upstream's, unchanged.
        upstream_manifests = {
            (docroot / stack / rel).read_bytes()
            for stack in ("develop", "develop/e4s")
            if (docroot / stack / rel).exists()
        }
        assert (copy / rel).read_bytes() in upstream_manifests
    assert (copy / "v3/layout.json").read_bytes() == (
        docroot / "develop/v3/layout.json"
    ).read_bytes()
    # The copy's key index lists exactly the trusted key that signed its manifests,
    # written by mirrorsync (upstream's key index is never copied).
    keys = "v3/manifests/key/keys.manifest.json"
    (record,) = _manifest_records((copy / keys).read_bytes())
    key_index = copy / "blobs/sha256" / record["checksum"][:2] / record["checksum"]
    assert list(json.loads(key_index.read_bytes())["keys"]) == [fingerprint]
    (key,) = _manifest_records(
        (copy / f"v3/manifests/key/{fingerprint}.key.manifest.json").read_bytes()
    )
    key_blob = copy / "blobs/sha256" / key["checksum"][:2] / key["checksum"]
    assert key_blob.read_bytes() == export_public_key(gpg_home, fingerprint)
    # Stacks share blobs: each tarball was fetched once, though both stacks list most.
    tarballs = {
        r["checksum"]
        for h in binaries
        for r in _manifest_records((copy / _rel(nodes_by_hash[h])).read_bytes())
        if r["mediaType"].startswith("application/vnd.spack.install")
    }
    names = [p.rsplit("/", 1)[1] for p in _blob_gets(upstream)]
    assert sorted(n for n in names if n in tarballs) == sorted(tarballs)

    # mirrorsync reads its own copy back as a mirror source, and every checksum holds.
    with FixtureServer(copy) as served:
        back = write_config(
            tmp_path / "back.yaml",
            f"database: {tmp_path / 'back.db'}\nsources:\n"
            f"  - name: copy\n    kind: mirror\n    url: {served.url}\n"
            f"    verify_signatures: true\n" + QUICK_RETRIES,
        )
        synced = run_cli("-c", str(back), "once", cwd=tmp_path)
        assert synced.returncode == 0, synced.stderr
        verified = run_cli("-c", str(back), "verify", "--checksums", cwd=tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "verify: 4 specs in 1 stack, 0 problems" in verified.stderr

    status = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert status.returncode == 0
    line = next(x for x in status.stdout.splitlines() if "local" in x and "copy" in x)
    assert " 4 " in line  # binaries


@pytest.mark.usefixtures("backend")
def test_upstream_changes_fetch_only_missing_blobs_and_delete_after_grace(
    tmp_path: Path, docroot: Path, upstream: FixtureServer
) -> None:
    nodes = _graph()
    _publish_upstream(docroot, nodes, None)
    config = _config(tmp_path, upstream, "    delete_after: 1h")
    _sync(config)
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    (first,) = _mirror(config, t0)
    assert first.status == "published" and first.binaries == 7, first
    copy = tmp_path / "copy"
    before = set(_blob_gets(upstream))
    old_index = (copy / INDEX_MANIFEST).read_bytes()

    # Upstream drops hdf5 and adds py-pandas (on py-numpy): a new state.
    changed = dict(nodes)
    hdf5 = changed.pop("hdf5")
    changed["py-pandas"] = spec_node(
        "py-pandas", "2.0", _h("py-pandas"), dependencies=[("py-numpy", nodes["py-numpy"]["hash"])]
    )
    _publish_upstream(docroot, changed, None)
    _sync(config)
    upstream.reset_log()
    (second,) = _mirror(config, t0 + timedelta(minutes=5))
    assert second.status == "published"
    assert (second.version, second.added, second.removed) == (2, 1, 1)
    # The copy re-reads both stacks' indexes (one GET each: it needs their nodes whole),
    # and fetches only the new binary's tarball and spec blobs: nothing it has.
    indexes = {_index_checksum(docroot, rel) for rel in ("develop", "develop/e4s")}
    got = _blob_gets(upstream)
    fetched = [p for p in got if p.rsplit("/", 1)[1] not in indexes]
    assert len(got) - len(fetched) == 2
    assert len(fetched) == len(set(fetched)) == 2
    assert not set(fetched) & before
    assert (copy / INDEX_MANIFEST).read_bytes() != old_index
    assert _check_copy(copy) == {v["hash"] for k, v in changed.items() if k != "openssl"}
    hdf5_manifest = copy / f"v3/manifests/spec/hdf5/hdf5-1.0-{hdf5['hash']}.spec.manifest.json"
    assert hdf5_manifest.exists()  # unreferenced, but delete_after (1h) has not passed
    assert second.deleted == 0 and second.waiting == 4  # manifest, 2 blobs, old index blob

    (third,) = _mirror(config, t0 + timedelta(minutes=30))
    assert third.status == "unchanged" and third.deleted == 0 and third.waiting == 4
    assert len(_blob_gets(upstream)) == len(got)  # nothing fetched: nothing changed
    (fourth,) = _mirror(config, t0 + timedelta(minutes=66))
    assert fourth.deleted == 4 and fourth.waiting == 0
    assert not hdf5_manifest.exists()
    assert _check_copy(copy) == {v["hash"] for k, v in changed.items() if k != "openssl"}


def test_delete_after_zero_deletes_right_after_publishing(
    tmp_path: Path, docroot: Path, upstream: FixtureServer
) -> None:
    nodes = _graph()
    _publish_upstream(docroot, nodes, None)
    config = _config(tmp_path, upstream, "    delete_after: 0\n    stacks: [root]")
    _sync(config)
    (first,) = _mirror(config)
    assert first.binaries == 7
    changed = {k: v for k, v in nodes.items() if k != "hdf5"}
    _publish_upstream(docroot, changed, None)
    _sync(config)
    (second,) = _mirror(config)
    assert second.removed == 1 and second.deleted == 4  # manifest, tarball, spec blob, index
    copy = tmp_path / "copy"
    on_disk = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()}
    hdf5 = nodes["hdf5"]["hash"]
    assert not any(hdf5 in p for p in on_disk)
    assert _check_copy(copy) == {v["hash"] for k, v in changed.items() if k != "openssl"}


# -- failures -----------------------------------------------------------------------------


def _tarball_for(node: Node) -> bytes:
    """Small binaries, but a 3 MB one for py-pandas (more than the small tmpfs holds)."""
    size = 3_000_000 if node["name"] == "py-pandas" else 600
    return random.Random(node["hash"]).randbytes(size)


def _snapshot(copy: Path) -> dict[str, bytes]:
    return {p.relative_to(copy).as_posix(): p.read_bytes() for p in copy.rglob("*") if p.is_file()}


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("fault", ["checksum", "not found", "disk full"])
def test_a_failure_fails_the_copy_with_one_line_and_keeps_what_was_published(
    tmp_path: Path, docroot: Path, upstream: FixtureServer, fault: str
) -> None:
    nodes = _graph()
    root = docroot / "develop"
    write_v3_mirror(root, list(nodes.values()), tarball=_tarball_for)
    write_catalog(docroot, {"develop": {"root": "develop"}})
    prom = tmp_path / "mirrorsync.prom"
    text = _config_text(tmp_path, upstream, "") + f"metrics: {{textfile: {prom}}}\n"
    config = write_config(tmp_path / "c.yaml", text)
    copy = tmp_path / "copy"
    with contextlib.ExitStack() as stack:
        if fault == "disk full":
            stack.enter_context(_tmpfs(copy, "2m"))
        first = run_cli("-c", str(config), "once", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        published = _snapshot(copy)
        pandas = spec_node(
            "py-pandas", "2.0", _h("pandas"), dependencies=[("py-numpy", nodes["py-numpy"]["hash"])]
        )
        info = write_v3_mirror(root, [*nodes.values(), pandas], tarball=_tarball_for)
        write_catalog(docroot, {"develop": {"root": "develop"}})
        tarball = docroot / "develop" / info.tarballs[pandas["hash"]]
        if fault == "checksum":
            data = bytearray(tarball.read_bytes())
            data[100] ^= 0xFF
            tarball.write_bytes(bytes(data))
        elif fault == "not found":
            tarball.unlink()

        failed = run_cli("-c", str(config), "once", cwd=tmp_path)
        assert failed.returncode == 1
        lines = [x for x in failed.stderr.splitlines() if x.startswith("mirrorsync: failed:")]
        assert len(lines) == 1, failed.stderr
        (line,) = lines
        assert line.startswith("mirrorsync: failed: mirror local: ")
        expected = {
            "checksum": f"{info.tarballs[pandas['hash']]}: sha256 is ",
            "not found": f"{info.tarballs[pandas['hash']]}: HTTP 404",
            "disk full": "cannot write: no space left on the device",
        }[fault]
        assert expected in line
        assert "Traceback" not in failed.stderr
        # The published state is untouched: same index, every file it names intact.
        after = _snapshot(copy)
        assert after[INDEX_MANIFEST] == published[INDEX_MANIFEST]
        assert {k: v for k, v in after.items() if k in published} == published
        assert not [k for k in after if k.endswith(".part")]
        assert _check_copy(copy) == {v["hash"] for v in nodes.values()}
        metrics = prom.read_text()
        assert 'mirrorsync_last_run_failures{kind="mirror"} 1' in metrics
        assert 'mirrorsync_mirror_failing{mirror="local"} 1' in metrics
        assert 'mirrorsync_mirror_version{mirror="local"} 1' in metrics
        status = run_cli("-c", str(config), "status", cwd=tmp_path)
        assert "local" in status.stdout and expected.split(":")[-1].strip()[:20] in status.stdout


# -- SIGKILL at random moments ----------------------------------------------------------


def test_sigkilled_runs_never_expose_a_broken_index_and_a_clean_run_completes(
    tmp_path: Path, docroot: Path, upstream: FixtureServer
) -> None:
    from mirrorsync.fixture.specs import synthetic_specs

    specs = synthetic_specs(40, seed=15)
    write_v3_mirror(docroot / "develop", specs[:15])
    write_catalog(docroot, {"develop": {"root": "develop"}})
    text = _config_text(tmp_path, upstream, "    delete_after: 1h").replace(
        "concurrency: 4", "concurrency: 2"
    )
    config = write_config(tmp_path / "c.yaml", text)
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    copy = tmp_path / "copy"
    first = _check_copy(copy)
    assert first == {s["hash"] for s in specs[:15]}

    write_v3_mirror(docroot / "develop", specs[10:])
    write_catalog(docroot, {"develop": {"root": "develop"}})
    _sync(parse_config(text, str(config)))
    upstream.reset_log()
    # 25 new specs' 50 blobs, 2 at a time, take >= 3.75 s: the first three runs, each
    # killed within 1.2 s of starting, cannot finish the copy however fast the machine.
    upstream.add_fault("*/blobs/*", "delay", times=None, delay=0.15)

    problems: list[str] = []
    seen: set[frozenset[str]] = set()
    stop = threading.Event()

    def reader() -> None:  # what a Spack client polling the copy would see
        while not stop.is_set():
            try:
                seen.add(frozenset(_check_copy(copy)))
            except (OSError, AssertionError, ValueError, KeyError) as exc:
                problems.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    rng = random.Random(15)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    kills = 0
    try:
        for _ in range(6):
            process = subprocess.Popen(
                [sys.executable, "-m", "mirrorsync", "-c", str(config), "mirror"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.3, 1.2))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait(timeout=30)
        upstream.clear_faults()
        clean = run_cli("-c", str(config), "mirror", cwd=tmp_path)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert clean.returncode == 0, clean.stderr
    assert kills >= 3
    assert problems == []
    final = {s["hash"] for s in specs[10:]}
    assert _check_copy(copy) == final
    assert seen <= {frozenset(first), frozenset(final)}  # only whole states, old or new
    # Resumed, not restarted: a blob received whole is fetched again only if a kill
    # came between its last byte and its rename (at most one in flight per worker).
    sizes = {r.path: r.bytes_sent for r in upstream.requests if r.status == 200}
    whole = [
        r.path
        for r in upstream.requests
        if "/blobs/" in r.path and r.status == 200 and r.bytes_sent == sizes[r.path]
    ]
    assert len(whole) - len(set(whole)) <= 2 * kills


# -- command, events, configuration -------------------------------------------------------


@pytest.mark.usefixtures("backend")
def test_mirror_command_dry_run_counts_then_runs_and_records_an_event(
    tmp_path: Path, docroot: Path, upstream: FixtureServer
) -> None:
    nodes = _graph()
    _publish_upstream(docroot, nodes, None)
    config_text = _config_text(tmp_path, upstream, '    os: ["ubuntu*"]\n    delete_after: 0')
    config = write_config(tmp_path / "c.yaml", config_text)
    _sync(parse_config(config_text, str(config)))
    copy = tmp_path / "copy"

    dry = run_cli("-c", str(config), "mirror", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    binaries = [v for k, v in nodes.items() if k not in ("openssl", "hdf5")]  # hdf5: rhel8
    tarball_bytes = sum(
        len(p.read_bytes())
        for p in (docroot / "develop/blobs/sha256").rglob("*")
        if p.is_file()
        and any(p.name in (docroot / "develop" / _rel(n)).read_text() for n in binaries)
    )
    assert f"mirror local: {len(binaries)} binaries" in dry.stdout
    # Sizes in the one human form (decimal units), as in every table and log line.
    assert f"would download {2 * len(binaries)} blobs ({human_size(tarball_bytes)})" in dry.stdout
    assert f"and {len(binaries)} manifests; would delete up to 0 files (0 B)" in dry.stdout
    assert not copy.exists() or not any(copy.rglob("*.json"))  # a dry run writes nothing
    once_dry = run_cli("-c", str(config), "once", "--dry-run", "--json", cwd=tmp_path)
    assert once_dry.returncode == 0, once_dry.stderr
    (planned,) = json.loads(once_dry.stdout)["mirrors"]
    assert (planned["status"], planned["blobs_fetched"]) == ("dry run", 2 * len(binaries))
    assert not copy.exists() or not any(copy.rglob("*.json"))

    done = run_cli("-c", str(config), "mirror", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert (result["status"], result["binaries"], result["added"]) == ("published", 6, 6)
    assert result["blobs_fetched"] == 2 * 6 + 0  # no keys: the fixture mirror is unsigned
    again = run_cli("-c", str(config), "mirror", "--dry-run", cwd=tmp_path)
    assert "would download 0 blobs (0 B) and 0 manifests" in again.stdout

    events = run_cli(
        "-c", str(config), "events", "--json", "--type", "mirror.updated", cwd=tmp_path
    )
    (event,) = [json.loads(x) for x in events.stdout.splitlines()]
    assert event["type"] == "mirror.updated" and event["stack_version"] == 1
    assert event["mirror"] == {
        "name": "local",
        "binaries": 6,
        "bytes": result["bytes"],
        "added": 6,
        "removed": 0,
    }


def _rel(node: Node) -> str:
    name, version, spec_hash = node["name"], node["version"], node["hash"]
    return f"v3/manifests/spec/{name}/{name}-{version}-{spec_hash}.spec.manifest.json"


@pytest.mark.parametrize(
    ("mirror", "problem"),
    [
        ("    sign_index: true", "mirrors[0].sign_index: Spack never signs v3 index manifests"),
        ("    delete_after: soon", "mirrors[0].delete_after: expected seconds or a duration"),
        ("    packages: ['py-[']", "mirrors[0].packages[0]: glob 'py-[' has an unclosed '['"),
        ("    colour: red", "mirrors[0].colour: unknown key"),
    ],
)
def test_mirror_configuration_errors_name_the_key(
    tmp_path: Path, server: FixtureServer, mirror: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, server, mirror)
    assert problem in str(caught.value)


def test_a_mirror_needs_a_catalog_or_mirror_source_and_a_release(
    tmp_path: Path, server: FixtureServer
) -> None:
    text = _config_text(tmp_path, server, "").replace("    release: develop\n", "")
    with pytest.raises(ConfigError, match=r"mirrors\[0\]\.release: required for a catalog"):
        parse_config(text, "c.yaml")
    text = _config_text(tmp_path, server, "").replace("source: test", "source: nope")
    with pytest.raises(ConfigError, match=r"mirrors\[0\]\.source: expected a catalog or mirror"):
        parse_config(text, "c.yaml")


@pytest.mark.usefixtures("backend")
def test_webhooks_subscribed_to_mirror_updated_receive_the_counts(
    tmp_path: Path, docroot: Path, upstream: FixtureServer
) -> None:
    from receiver import Receiver, new_secret

    nodes = _graph()
    _publish_upstream(docroot, nodes, None)
    secret = new_secret()
    with Receiver(secret) as receiver:
        hook = (
            f"webhooks:\n  - name: site\n    url: {receiver.url}\n    secret_env: HOOK_SECRET\n"
            "    events: [mirror.updated]\n"
        )
        config = write_config(tmp_path / "c.yaml", _config_text(tmp_path, upstream, "") + hook)
        done = run_cli("-c", str(config), "once", cwd=tmp_path, env={"HOOK_SECRET": secret})
        assert done.returncode == 0, done.stderr
        events = [e for r in receiver.acknowledged for e in r.events]
    (event,) = events  # only the subscribed type: no spec.added, stack.added...
    assert event["type"] == "mirror.updated"
    assert event["mirror"]["name"] == "local"
    assert (event["mirror"]["binaries"], event["mirror"]["added"]) == (7, 7)


def test_the_first_mirror_after_adding_a_webhook_sends_it_mirror_updated(
    tmp_path: Path, docroot: Path, upstream: FixtureServer
) -> None:
    """Synced without webhooks; then a webhook is added and `mirror` (not `once`) runs:
    it registers the webhook before publishing, so the new state's event reaches it
    (before: registered after publishing, the event was not queued for it)."""
    from receiver import Receiver, new_secret

    _publish_upstream(docroot, _graph(), None)
    text = _config_text(tmp_path, upstream, "")
    _sync(parse_config(text, str(write_config(tmp_path / "c.yaml", text))))
    secret = new_secret()
    with Receiver(secret) as receiver:
        hook = (
            f"webhooks:\n  - name: site\n    url: {receiver.url}\n    secret_env: HOOK_SECRET\n"
            "    events: [mirror.updated]\n"
        )
        config = write_config(tmp_path / "c.yaml", text + hook)
        done = run_cli("-c", str(config), "mirror", cwd=tmp_path, env={"HOOK_SECRET": secret})
        assert done.returncode == 0, done.stderr
        events = [e for r in receiver.acknowledged for e in r.events]
    (event,) = events
    assert (event["type"], event["mirror"]["name"]) == ("mirror.updated", "local")


def test_mirror_writes_the_metrics_of_the_copy_it_published(
    tmp_path: Path, docroot: Path, upstream: FixtureServer
) -> None:
    """`mirror` rewrites the metrics file (before: only `once` wrote it, so a copy
    updated by `mirror` showed its old figures until the next sync)."""
    from test_metrics import parse_prometheus

    _publish_upstream(docroot, _graph(), None)
    textfile = tmp_path / "ms.prom"
    text = _config_text(tmp_path, upstream, "") + f"metrics: {{textfile: {textfile}}}\n"
    _sync(parse_config(text, str(write_config(tmp_path / "c.yaml", text))))
    synced = parse_prometheus(textfile.read_text())  # the sync's, no copy yet
    assert not any(name.startswith("mirrorsync_mirror_") for name, _ in synced)
    done = run_cli("-c", str(tmp_path / "c.yaml"), "mirror", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    samples = parse_prometheus(textfile.read_text())
    local = (("mirror", "local"),)
    assert samples[("mirrorsync_mirror_version", local)] == 1
    assert samples[("mirrorsync_mirror_binaries", local)] == 7
    last_run = {k: v for k, v in synced.items() if k[0].startswith("mirrorsync_last_run_")}
    assert last_run and {k: samples[k] for k in last_run} == last_run  # the sync's, kept


def test_mirror_takes_the_run_lock(tmp_path: Path, docroot: Path, upstream: FixtureServer) -> None:
    from mirrorsync.lock import RunLock

    _publish_upstream(docroot, _graph(), None)
    text = _config_text(tmp_path, upstream, "")
    config = write_config(tmp_path / "c.yaml", text)
    _sync(parse_config(text, str(config)))
    lock = RunLock(tmp_path / "state.db")
    assert lock.try_acquire()
    try:
        refused = run_cli("-c", str(config), "mirror", cwd=tmp_path)
    finally:
        lock.release()
    assert refused.returncode == 75
    assert "another run holds the lock" in refused.stderr
    assert not (tmp_path / "copy").exists()
    assert run_cli("-c", str(config), "mirror", cwd=tmp_path).returncode == 0


def test_a_file_removed_from_the_copy_is_fetched_again_by_the_next_run(
    tmp_path: Path, docroot: Path, upstream: FixtureServer
) -> None:
    nodes = _graph()
    _publish_upstream(docroot, nodes, None)
    config = _config(tmp_path, upstream, "    stacks: [root]")
    _sync(config)
    (first,) = _mirror(config)
    assert first.status == "published"
    copy = tmp_path / "copy"
    installs = _copy_index(copy)
    zlib = installs[nodes["zlib"]["hash"]]["spec"]
    manifest = copy / _rel(zlib)
    (tarball, _) = _manifest_records(manifest.read_bytes())
    blob = copy / "blobs/sha256" / tarball["checksum"][:2] / tarball["checksum"]
    blob.unlink()
    upstream.reset_log()
    (second,) = _mirror(config)
    assert second.status == "unchanged" and second.error is None
    assert second.copied.blobs_fetched == 1
    assert [p.rsplit("/", 1)[1] for p in _blob_gets(upstream)].count(tarball["checksum"]) == 1
    assert _check_copy(copy) == {v["hash"] for k, v in nodes.items() if k != "openssl"}


def _dep(name: str, spec_hash: str, *types: str) -> dict[str, Any]:
    return {"name": name, "hash": spec_hash, "parameters": {"deptypes": list(types)}}


def test_build_only_dependencies_are_listed_as_spack_lists_them() -> None:
    """Every dependency hash of the copy's records has a record, as in Spack's own
    index: build-only dependencies (and theirs, recursively) are upstream's records
    with in_buildcache false; one that is also a link dependency stays a binary."""
    from mirrorsync.formats.rawindex import parse_raw_index
    from mirrorsync.mirrors.admit import Admission
    from mirrorsync.mirrors.plan import StackIndex, select
    from mirrorsync.store.mirrors import ManifestState

    h = {n: fake_hash(n) for n in ("app", "lib", "zlib", "tool", "toollib", "cc")}
    deps = {
        "app": [_dep("lib", h["lib"], "link"), _dep("tool", h["tool"], "build")],
        "lib": [_dep("zlib", h["zlib"], "build", "link"), _dep("tool", h["tool"], "build")],
        "zlib": [_dep("cc", h["cc"], "build")],
        "tool": [_dep("toollib", h["toollib"], "link"), _dep("cc", h["cc"], "build")],
        "toollib": [_dep("cc", h["cc"], "build")],
        "cc": [],
    }
    installs = {}
    for name, spec_hash in h.items():
        node: dict[str, Any] = {
            "name": name,
            "version": "1.0",
            "arch": {"platform": "linux", "platform_os": "debian12", "target": "x86_64"},
            "hash": spec_hash,
        }
        if deps[name]:
            node["dependencies"] = deps[name]
        # cc is an external; everything else upstream pushed (tool with build deps).
        installs[spec_hash] = {"spec": node, "ref_count": 1, "in_buildcache": name != "cc"}
    raw = json.dumps({"database": {"version": "8", "installs": installs}}).encode()
    index = parse_raw_index(raw)
    ok = ManifestState("ok", None, "0" * 64, None)
    admission = Admission({(1, x): ok for x in h.values()}, verifies=False)
    copy = parse_config(
        "database: x.db\nsources: [{name: s, kind: mirror, url: 'http://127.0.0.1:1/'}]\n"
        "mirrors: [{name: m, path: /tmp/m, source: s, packages: [app]}]\n"
    ).mirrors[0]
    selection = select(copy, [StackIndex("root", "http://x/", index, 1)], admission)

    assert set(selection.records) == set(h.values())
    assert selection.binaries == {h["app"], h["lib"], h["zlib"]}
    for name in ("tool", "toollib", "cc"):
        record = msgspec.json.decode(selection.records[h[name]].raw)
        assert record == {**installs[h[name]], "in_buildcache": False}
        assert selection.records[h[name]].in_buildcache is False
    for name in ("app", "lib", "zlib"):  # binaries: upstream's bytes, unchanged
        assert selection.records[h[name]] is index.installs[h[name]]
