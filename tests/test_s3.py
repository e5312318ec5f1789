"""S3 as a source and as a copy target, against a real S3 API over HTTP (moto's server).

One Spack (the builder) installs the packages of ``tests/spack/`` and pushes them,
signed, to a directory; the test uploads that cache to a bucket of a moto server
started on a loopback port. ``mirrorsync once`` syncs the same cache from
``s3://`` and over HTTP, and copies it into another bucket; a fresh Spack
(``spack mirror add ... s3://...`` with the endpoint configured, reading through
boto3) installs from that copy. A reader polls the copy's bucket while six copy
runs are SIGKILLed; a run after a complete one uploads nothing.

One module (one xdist worker): Spack is unpacked and the cache built once.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, database_value, run_cli, write_config
from mirrorsync.fixture.build import write_catalog
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import fingerprints, stop_agent
from mirrorsync.formats.manifest import parse_index_manifest, spec_manifest_records
from mirrorsync.formats.rawindex import parse_raw_index
from s3server import AWS, client, moto_server
from spackcache import Spack, require_spack, unpack, warnings

pytestmark = pytest.mark.timeout(400)

INDEX = "v3/manifests/index/index.manifest.json"


@dataclass
class World:
    tmp: Path
    spack: Path
    endpoint: str
    s3: Any  # a boto3 client of the moto server
    config: Path
    cache: Path  # the cache Spack pushed (a directory)
    actors: list[Spack] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli("-c", str(self.config), *args, cwd=self.tmp, env=AWS, timeout=timeout)

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        out: dict[str, int] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out


def _config(tmp: Path, endpoint: str, http_url: str, key: Path, rate: float = 20.0) -> str:
    return f"""
database: {database_value(tmp)}
http:
  per_host_rate: {rate}
  retries: {{attempts: 2, backoff_initial: 0.1, backoff_max: 0.5}}
sources:
  - name: over-s3
    kind: mirror
    url: s3://upstream/cache
    manifests: all
    verify_signatures: true
    trusted_keys: [{key}]
    s3: {{endpoint_url: "{endpoint}"}}
  - name: catalogue
    kind: catalog
    url: {http_url.rsplit("/", 1)[0]}/cache_spack_io_index.json
    bucket_urls: {{spack-binaries: "s3://upstream/"}}
    s3: {{endpoint_url: "{endpoint}"}}
    manifests: all
    verify_signatures: true
    trusted_keys: [{key}]
  - name: over-http
    kind: mirror
    url: {http_url}
    manifests: all
    verify_signatures: true
    trusted_keys: [{key}]
mirrors:
  - name: in-s3
    path: s3://copies/site
    source: over-s3
    delete_after: 0
    s3: {{endpoint_url: "{endpoint}"}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tar = require_spack()
    tmp = tmp_path_factory.mktemp("s3")
    spack = unpack(tar, tmp / "dist")
    server = moto_server()
    endpoint = server.__enter__()
    builder = Spack(spack, tmp / "builder")
    try:
        builder.run("gpg", "create", "--comment", "test", "Mirrorsync Test", "test@example.invalid")
        (fingerprint,) = fingerprints(builder.gnupghome)
        builder.run("install", "msapp@1.0")
        builder.run("install", "msdata@1.0")
        cache = tmp / "www" / "cache"
        builder.run(
            "buildcache",
            "push",
            "--key",
            fingerprint,
            "--without-build-dependencies",
            "--update-index",
            f"file://{cache}",
            "msapp@1.0",
            "msdata@1.0",
        )
        key = tmp / "key.pub"
        builder.run("gpg", "export", str(key))
        write_catalog(tmp / "www", {"develop": {"root": "cache"}})  # names s3://spack-binaries/
        s3 = client(endpoint)
        for bucket in ("upstream", "copies"):
            s3.create_bucket(Bucket=bucket)
        for path in sorted(p for p in cache.rglob("*") if p.is_file()):
            s3.upload_file(str(path), "upstream", f"cache/{path.relative_to(cache).as_posix()}")
        with FixtureServer(tmp / "www") as up:
            config = write_config(
                tmp / "mirrorsync.yaml", _config(tmp, endpoint, f"{up.url}/cache", key)
            )
            world = World(tmp, spack, endpoint, s3, config, cache, [builder])
            done = world.cli("once")
            assert done.returncode == 0, done.stdout + done.stderr
            yield world
    finally:
        for actor in [builder]:
            stop_agent(actor.gnupghome)
        server.__exit__(None, None, None)


def _rows(db: Path, sql: str, source: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute(sql, (source,)).fetchall())


def test_an_s3_source_syncs_as_the_same_cache_over_http(world: World) -> None:
    """Events, history, manifests and signatures: the same from s3:// as over HTTP."""
    db = world.tmp / "state.db"
    events = """SELECT e.type, e.release, s.hash FROM events e JOIN sources src
                ON src.id = e.source_id LEFT JOIN specs s ON s.id = e.spec_id
                WHERE src.name = ? AND e.type NOT LIKE 'mirror.%'"""
    history = """SELECT st.name, v.version, v.index_checksum, v.spec_count, v.added, v.removed
                 FROM stack_versions v JOIN stacks st ON st.id = v.stack_id
                 JOIN sources src ON src.id = st.source_id WHERE src.name = ?"""
    manifests = """SELECT s.hash, m.status, m.tarball_checksum, m.spec_checksum,
                   m.manifest_sha256, m.signer FROM spec_manifests m
                   JOIN specs s ON s.id = m.spec_id JOIN stacks st ON st.id = m.stack_id
                   JOIN sources src ON src.id = st.source_id WHERE src.name = ?"""
    for sql in (events, history, manifests):
        over_s3 = _rows(db, sql, "over-s3")
        assert over_s3 and over_s3 == _rows(db, sql, "over-http")
    signed = _rows(db, manifests, "over-s3")
    assert {row[1] for row in signed} == {"ok"} and all(row[5] for row in signed)


def test_catalogue_bucket_urls_may_name_an_s3_bucket(world: World) -> None:
    """The catalogue names s3://spack-binaries/...; bucket_urls maps it to s3://upstream/,
    read from S3 directly: the same specs, manifests and signers."""
    db = world.tmp / "state.db"
    manifests = """SELECT s.hash, m.status, m.manifest_sha256, m.signer FROM spec_manifests m
                   JOIN specs s ON s.id = m.spec_id JOIN stacks st ON st.id = m.stack_id
                   JOIN sources src ON src.id = st.source_id WHERE src.name = ?"""
    read = _rows(db, manifests, "catalogue")
    assert read and read == _rows(db, manifests, "over-http")
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute(
            "SELECT st.mirror_root FROM stacks st JOIN sources src ON src.id = st.source_id"
            " WHERE src.name = 'catalogue'"
        ).fetchone()
    assert root == "s3://upstream/cache"


def test_spack_installs_from_the_s3_copy(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """``spack mirror add`` with the moto endpoint; Spack reads the bucket through boto3."""
    spack = Spack(world.spack, world.tmp / "installer")
    world.actors.append(spack)
    for name, value in AWS.items():  # Spack's boto3 session reads the credentials from them
        monkeypatch.setenv(name, value)
    try:
        said = [
            spack.run(
                "mirror",
                "add",
                "--signed",
                "--s3-endpoint-url",
                world.endpoint,
                "copy",
                "s3://copies/site",
            ),
            spack.run("buildcache", "keys", "--install", "--trust"),
            spack.run("install", "--cache-only", "msapp@1.0"),
        ]
        names = {r["spec"]["name"] for r in spack.database().values() if r["installed"]}
    finally:
        stop_agent(spack.gnupghome)
    assert names == {"msapp", "mslib", "msdata"}
    assert [w for done in said for w in warnings(done)] == []


def _verified(world: World) -> None:
    done = world.cli("verify", "--mirror", "in-s3", "--checksums")
    assert done.returncode == 0, done.stdout + done.stderr


def test_verify_mirror_reads_the_s3_copy(world: World) -> None:
    """Every object of the published state, with its digest; an orphan is reported."""
    _verified(world)
    world.s3.put_object(Bucket="copies", Key="site/blobs/sha256/00/stray", Body=b"x")
    done = world.cli("verify", "--mirror", "in-s3")
    assert done.returncode == 1 and "blobs/sha256/00/stray" in done.stdout, done.stdout
    done = world.cli("verify", "--mirror", "in-s3", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "site/blobs/sha256/00/stray" not in world.keys("copies", "site/")


class _Reader(threading.Thread):
    """Polls the copy as Spack would read it: the index, then what it names."""

    def __init__(self, world: World) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.stop = threading.Event()
        self.pause = threading.Lock()
        self.seen = 0  # complete indexes read
        self.broken: list[str] = []

    def get(self, key: str) -> bytes | None:
        try:
            body: bytes = self.world.s3.get_object(Bucket="copies", Key=f"site/{key}")[
                "Body"
            ].read()
            return body
        except self.world.s3.exceptions.NoSuchKey:
            return None

    def run(self) -> None:
        while not self.stop.is_set():
            with self.pause:
                self.check()
            time.sleep(0.01)

    def check(self) -> None:
        manifest = self.get(INDEX)
        if manifest is None:
            return
        record = parse_index_manifest(manifest, INDEX)
        blob = f"blobs/sha256/{record.checksum[:2]}/{record.checksum}"
        data = self.get(blob)
        if data is None or hashlib.sha256(data).hexdigest() != record.checksum:
            self.broken.append(f"index blob {blob}")
            return
        present = self.world.keys("copies", "site/")
        for install in parse_raw_index(data).installs.values():
            if not install.in_buildcache:
                continue
            spec = self.get(install.manifest_path)
            if spec is None:
                self.broken.append(install.manifest_path)
                continue
            _, _, parsed = spec_manifest_records(spec, install.manifest_path)
            for r in parsed.data:
                key = f"site/blobs/sha256/{r.checksum[:2]}/{r.checksum}"
                if present.get(key) != r.content_length:
                    self.broken.append(key)
        self.seen += 1


def _wipe(world: World) -> None:
    keys = list(world.keys("copies", "site/"))
    for start in range(0, len(keys), 500):
        world.s3.delete_objects(
            Bucket="copies", Delete={"Objects": [{"Key": k} for k in keys[start : start + 500]]}
        )


def test_a_reader_never_sees_an_index_naming_a_missing_object(world: World) -> None:
    """Six copy runs SIGKILLed at random moments (some into an empty bucket, the rest
    resuming), slowed by per_host_rate so a kill lands mid-upload; a reader polls."""
    slow = world.tmp / "slow.yaml"
    text = world.config.read_text().replace("per_host_rate: 20.0", "per_host_rate: 8")
    slow.write_text(text)
    reader = _Reader(world)
    reader.start()
    rng = random.Random(27)
    stages: list[tuple[int, bool]] = []  # after each kill: objects, whether an index
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **AWS}
    try:
        for run in range(6):
            if run % 3 == 0:
                with reader.pause:
                    _wipe(world)
            process = subprocess.Popen(
                [sys.executable, "-m", "mirrorsync", "-c", str(slow), "mirror"],
                cwd=world.tmp,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(1.5, 5.0))
            process.send_signal(signal.SIGKILL)
            process.wait()
            with reader.pause:
                left = world.keys("copies", "site/")
                stages.append((len(left), f"site/{INDEX}" in left))
        done = world.cli("mirror")
        assert done.returncode == 0, done.stdout + done.stderr
        time.sleep(0.3)
    finally:
        reader.stop.set()
        reader.join()
    assert reader.broken == []
    assert reader.seen > 0
    print("after each kill (objects, index):", stages)
    assert any(n and not index for n, index in stages), stages  # a kill landed mid-copy
    _verified(world)


def test_a_second_copy_run_uploads_nothing(world: World) -> None:
    """Complete copy, then a run with a changed-nothing source: no PUT, no POST, and
    no HEAD either (the published state's objects are known by one listing)."""
    first = world.cli("mirror")
    assert first.returncode == 0, first.stdout + first.stderr
    done = world.cli("-vv", "mirror")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    counts: dict[str, int] = {}
    for x in lines:
        if found := re.search(r"\b(GET|HEAD|PUT|POST|DELETE) s3://copies/", x):
            counts[found[1]] = counts.get(found[1], 0) + 1
    print("second run, requests to the copy's bucket:", counts)
    writes = [x for x in lines if re.search(r"\b(PUT|POST|DELETE) s3://", x)]
    assert writes == []
    assert [x for x in lines if re.search(r"\bGET s3://copies/\?list-type=2", x)]


def test_an_s3_error_is_one_line_naming_the_object(world: World) -> None:
    """A missing bucket: the copy fails with one line naming the s3:// URL, exit 1."""
    bad = world.tmp / "missing-bucket.yaml"
    text = world.config.read_text().replace("s3://copies/site", "s3://no-such-bucket/x")
    bad.write_text(text.replace("name: in-s3", "name: in-nowhere"))  # in-s3's state stays
    done = run_cli("-c", str(bad), "mirror", cwd=world.tmp, env=AWS, timeout=60)
    assert done.returncode == 1
    assert "s3://no-such-bucket/" in done.stderr and "NoSuchBucket" in done.stderr
    assert "Traceback" not in done.stderr
    assert AWS["AWS_SECRET_ACCESS_KEY"] not in done.stdout + done.stderr


def test_dry_run_and_health_check_read_the_bucket_only(world: World) -> None:
    """``mirror --dry-run`` on the S3 copy writes nothing; ``status --check`` does not
    call the bucket a missing directory."""
    before = world.keys("copies", "site/")
    done = world.cli("-vv", "mirror", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not re.search(r"\b(PUT|POST|DELETE) s3://", done.stdout + done.stderr)
    assert world.keys("copies", "site/") == before
    health = world.cli("status", "--check")
    assert "copy missing on disk" not in health.stdout + health.stderr
    assert "in-s3" not in health.stdout + health.stderr, health.stdout + health.stderr


def test_unreferenced_objects_go_after_delete_after(world: World) -> None:
    """An object the published index does not reference is deleted by the next run
    (``delete_after: 0``), after the publish; the referenced ones stay."""
    world.s3.put_object(Bucket="copies", Key="site/blobs/sha256/ff/unreferenced", Body=b"old")
    before = world.keys("copies", "site/")
    done = world.cli("mirror")
    assert done.returncode == 0, done.stdout + done.stderr
    after = world.keys("copies", "site/")
    assert "site/blobs/sha256/ff/unreferenced" not in after
    assert after == {k: v for k, v in before.items() if not k.endswith("/unreferenced")}
    assert "deleted 1 file" in done.stderr, done.stderr
