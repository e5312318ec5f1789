"""Bad input: a bad configuration exits 2 with one line; a bad remote document is refused
with a message naming its URL, and nothing from it is stored."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sqlite3
from pathlib import Path

import anyio
import pytest

from conftest import catalog_config, run_cli, sync
from dbstate import event_counts, sqlite_file, versions
from mirrorsync.config import Config
from mirrorsync.fixture.build import (
    CATALOG_NAME,
    INDEX_MANIFEST,
    build_catalog_from_specs,
    clearsign,
    write_catalog,
    write_v2_mirror,
)
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store.location import Location
from mirrorsync.sync import RunReport

# -- configuration -------------------------------------------------------------

GOOD_SOURCE = "sources: [{name: a, kind: mirror, url: 'https://m.example.org/spack'}]\n"
HOOK = "webhooks: [{name: w, url: 'https://h.example/x', secret_env: S, "
NUMBERS_OUT_OF_RANGE = [
    (
        "http: {concurrency: 1000000000000}",  # was MemoryError
        "http.concurrency: expected a number from 1 to 1024, got 1000000000000",
    ),
    ("http: {concurrency: 1000000}", "http.concurrency: expected a number from 1 to 1024"),  # hung
    ("http: {concurrency: 0}", "http.concurrency: expected a number from 1 to 1024"),
    ("http: {per_host_concurrency: 5000}", "http.per_host_concurrency: expected a number from 1"),
    (
        "http: {timeout: .inf}",  # meant no timeout at all
        "http.timeout: expected a number above 0 and at most 3600 (seconds), got inf",
    ),
    ("http: {timeout: .nan}", "http.timeout: expected a number above 0 and at most 3600"),
    ("http: {per_host_rate: .inf}", "http.per_host_rate: expected a number above 0 and at most"),
    ("http: {retries: {attempts: 1000}}", "http.retries.attempts: expected a number from 1 to 100"),
    (
        "http: {retries: {backoff_max: .inf}}",
        "http.retries.backoff_max: expected a number from 0 to 86400 (seconds), got inf",
    ),
    ("http: {retries: {backoff_initial: -1}}", "http.retries.backoff_initial: expected a number"),
    ("limits: {page: 0}", "limits.page: expected a number from 1 to"),  # was not validated
    ("limits: {page: '2 TiB'}", "limits.page: expected a number from 1 to 1099511627776"),
    ("limits: {page: huge}", "limits.page: expected a size such as"),
    (
        HOOK + "max_age: .nan}]",  # was a traceback on the first failed delivery
        "webhooks[0].max_age: expected a number above 0 and at most 31536000 (seconds; 365d), got nan",
    ),
    (HOOK + "max_age: .inf}]", "webhooks[0].max_age: expected a number above 0 and at most"),
    (HOOK + "max_age: 400d}]", "webhooks[0].max_age: expected a number above 0 and at most"),
    (HOOK + "timeout: .inf}]", "webhooks[0].timeout: expected a number above 0 and at most 3600"),
    (HOOK + "max_batch: 0}]", "webhooks[0].max_batch: expected a number from 1 to 10000"),
    (HOOK + "max_batch: 100000}]", "webhooks[0].max_batch: expected a number from 1 to 10000"),
]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (GOOD_SOURCE + "colour: red\n", "colour: unknown key"),
        (
            GOOD_SOURCE + "http: {retries: {attempts: 2, pause: 3}}\n",
            "http.retries.pause: unknown key",
        ),
        (
            GOOD_SOURCE + "http: {timeout: soon}\n",
            "http.timeout: expected seconds or a duration such as 30s, 5m, 12h or 3d, got 'soon'",
        ),
        (GOOD_SOURCE + "http: {timeout: [1]}\n", "http.timeout: expected float, got array"),
        (GOOD_SOURCE + "http: {concurrency: 2.5}\n", "http.concurrency: expected int, got float"),
        (
            "sources: [{name: a, kind: mirror, url: 'https://m/s', insecure: 'no'}]",
            "sources[0].insecure: expected bool, got str",
        ),
        ("sources: [{kind: catalog}]", "sources[0].name: required key is missing"),
        ("sources: [{name: a}]", "sources[0].kind: required key is missing"),
        # Valid for bundle import (a receiving site); once says a source is needed.
        ("database: x.db\n", "sources: expected at least one source to sync"),
        (
            "sources: [{name: a, kind: catalog, stacks: ['e4s', '[ml']}]",
            "sources[0].stacks[1]: glob '[ml' has an unclosed '['",
        ),
        (
            "sources: [{name: a, kind: catalog, exclude_releases: ['']}]",
            "sources[0].exclude_releases[0]: expected a non-empty glob",
        ),
        (GOOD_SOURCE + "limits: {index: huge}\n", "limits.index: expected a size such as"),
        (
            GOOD_SOURCE + "limits: {manifest: 0}\n",
            "limits.manifest: expected a number from 1 to 1099511627776 (bytes; 1 TiB)",
        ),
        # Every number has a range; NaN and infinity are refused (README, Configuration).
        *((GOOD_SOURCE + text + "\n", says) for text, says in NUMBERS_OUT_OF_RANGE),
        (GOOD_SOURCE + "database: ''\n", "database: expected a file path"),
        (GOOD_SOURCE + "when: 2024-02-30\n", "invalid YAML: day is out of range for month"),
        ("sources: " + "[" * 2000, "invalid YAML"),
        ("sources: [{name: 'a b', kind: catalog}]", "sources[0].name: expected a name of letters"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = run_cli("-c", str(path), "once", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"mirrorsync: error: {path}: ") and says in line, line
    assert not (tmp_path / "x.db").exists()


def test_unreadable_configuration_exits_2(tmp_path: Path) -> None:
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes("sources: [{name: caf\xe9, kind: catalog}]".encode("latin-1"))
    a_directory = tmp_path / "dir.yaml"
    a_directory.mkdir()
    for path, says in ((not_utf8, "cannot read"), (a_directory, "cannot read")):
        done = run_cli("-c", str(path), "status", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"mirrorsync: error: {path}: {says}"), line


# -- remote documents ------------------------------------------------------------


def nodes(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


def build(docroot: Path) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("r", 3), "e4s": nodes("e", 3)}})


def serve_index(docroot: Path, data: bytes) -> str:
    """Publish ``data`` as the e4s index, with a manifest and catalogue that vouch for it."""
    root = docroot / "develop/e4s"
    sha = hashlib.sha256(data).hexdigest()
    blob = root / f"blobs/sha256/{sha[:2]}/{sha}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    record = {
        "contentLength": len(data),
        "mediaType": "application/vnd.spack.db.v8+json",
        "compression": "none",
        "checksumAlgorithm": "sha256",
        "checksum": sha,
    }
    (root / INDEX_MANIFEST).write_text(json.dumps({"version": 3, "data": [record]}))
    write_catalog(docroot, {"develop": {"root": "develop", "e4s": "develop/e4s"}})
    return f"/develop/e4s/blobs/sha256/{sha[:2]}/{sha}"


def install(h: str, **spec: object) -> dict[str, object]:
    node = spec_node("zlib", "1.3", fake_hash("x"))
    node.update(hash=h, **spec)
    return {"spec": node, "in_buildcache": True}


def index(installs: object) -> bytes:
    return json.dumps({"database": {"version": "8", "installs": installs}}).encode()


H = fake_hash("h")
BAD_INDEXES = {
    "truncated": index({H: install(H)})[:-20],
    "not-json": b"<html>503 Service Unavailable</html>",
    "installs-a-list": index([install(H)]),
    "no-name": index({H: {"spec": {"hash": H, "version": "1"}, "in_buildcache": True}}),
    "hash-uppercase": index({H.upper(): install(H.upper())}),
    "hash-not-base32": index({"0189" + H[4:]: install("0189" + H[4:])}),
    "hash-too-short": index({H[:31]: install(H[:31])}),
    "hash-mismatch": index({H: install(fake_hash("other"))}),
    "not-utf8": index({H: install(H, version="caf\udce9")}).replace(b"\\udce9", b"\xe9"),
}


def assert_nothing_stored_for_e4s(db: Location, bad_hashes: set[str]) -> None:
    assert versions(db) == {("develop", "root"): 1, ("develop", "e4s"): 0}
    assert not any(stack == "e4s" for _, _, stack in event_counts(db))
    with sqlite3.connect(sqlite_file(db)) as conn:
        stored = {row[0] for row in conn.execute("SELECT hash FROM specs")}
    assert not stored & bad_hashes
    assert stored == {str(n["hash"]) for n in nodes("r", 3)}


def assert_e4s_index_refused(report: RunReport, url: str, problem: str = "") -> None:
    assert report.exit_code == 1
    (line,) = report.failures
    assert line.startswith(f"test:develop/e4s: malformed build cache index at {url}: {problem}"), (
        line
    )


@pytest.mark.parametrize("case", sorted(BAD_INDEXES))
def test_bad_index_is_refused_naming_its_url(
    tmp_path: Path, docroot: Path, server: FixtureServer, case: str
) -> None:
    build(docroot)
    blob_path = serve_index(docroot, BAD_INDEXES[case])
    config = catalog_config(tmp_path, server)
    assert_e4s_index_refused(sync(config), f"{server.url}{blob_path}")
    assert_nothing_stored_for_e4s(config.database_path, {H, H.upper(), H[:31]})


@pytest.mark.parametrize("case", ["no-name", "hash-mismatch", "not-utf8"])
def test_bad_new_spec_in_a_resync_is_refused_and_the_stack_kept(
    tmp_path: Path, docroot: Path, server: FixtureServer, case: str
) -> None:
    """A resync decodes only the new specs (lazily): a bad one still fails the stack."""
    build(docroot)
    config = catalog_config(tmp_path, server)
    assert sync(config).exit_code == 0
    good = {str(n["hash"]): {"spec": n, "in_buildcache": True} for n in nodes("e", 3)}
    bad = json.loads(BAD_INDEXES[case].decode(errors="surrogateescape"))["database"]["installs"]
    data = index({**good, **bad})
    if case == "not-utf8":
        data = data.replace(b"\\udce9", b"\xe9")
    blob_path = serve_index(docroot, data)
    assert_e4s_index_refused(sync(config), f"{server.url}{blob_path}", f"install {H}")
    assert versions(config.database_path) == {("develop", "root"): 1, ("develop", "e4s"): 1}
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        stored = {row[0] for row in conn.execute("SELECT hash FROM specs")}
    assert H not in stored and set(good) <= stored


GOOD_RECORD = {
    "contentLength": 10,
    "mediaType": "application/vnd.spack.db.v8+json",
    "compression": "none",
    "checksumAlgorithm": "sha256",
    "checksum": "ab" * 32,
}
BAD_MANIFESTS = {
    "truncated": json.dumps({"data": [GOOD_RECORD]})[:-5].encode(),
    "data-not-a-list": json.dumps({"data": GOOD_RECORD}).encode(),
    "checksum-not-hex": json.dumps({"data": [{**GOOD_RECORD, "checksum": "zz" * 32}]}).encode(),
    "checksum-short": json.dumps({"data": [{**GOOD_RECORD, "checksum": "ab" * 31}]}).encode(),
    "checksum-upper": json.dumps({"data": [{**GOOD_RECORD, "checksum": "AB" * 32}]}).encode(),
    "algorithm-path": json.dumps(
        {"data": [{**GOOD_RECORD, "checksumAlgorithm": "../../../etc"}]}
    ).encode(),
    "no-index-record": json.dumps(
        {"data": [{**GOOD_RECORD, "mediaType": "application/vnd.spack.install.v2.tar+gzip"}]}
    ).encode(),
    "armour-no-end": clearsign(json.dumps({"data": [GOOD_RECORD]}))
    .replace("-----END PGP SIGNATURE-----", "")
    .encode(),
    "armour-no-signature": clearsign(json.dumps({"data": [GOOD_RECORD]}))
    .split("-----BEGIN PGP SIGNATURE-----")[0]
    .encode(),
    "armour-bad-header": clearsign(json.dumps({"data": [GOOD_RECORD]}))
    .replace("Hash: SHA512", "Hash SHA512")
    .encode(),
    "not-utf8": b'{"data": [{"mediaType": "caf\xe9"}]}',
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_index_manifest_is_refused_and_not_cached(
    tmp_path: Path, docroot: Path, server: FixtureServer, case: str
) -> None:
    build(docroot)
    manifest = docroot / "develop/e4s" / INDEX_MANIFEST
    manifest.write_bytes(BAD_MANIFESTS[case])
    config = catalog_config(tmp_path, server)
    report = sync(config)
    (line,) = report.failures
    url = f"{server.url}/develop/e4s/{INDEX_MANIFEST}"
    assert line.startswith(f"test:develop/e4s: malformed index manifest at {url}: "), line
    assert server.count("/develop/e4s/blobs/*") == 0
    assert_nothing_stored_for_e4s(config.database_path, set())
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        cached = {row[0] for row in conn.execute("SELECT url FROM http_cache")}
    assert (
        url not in cached
        and f"{server.url}/develop/v3/manifests/index/index.manifest.json" in cached
    )


BAD_CATALOGUES = {
    # The decoder's own words follow mirrorsync's; the key at fault is named.
    "truncated": (b'{"develop": [{"label": "root", "url": "s3://spack', ""),
    "release-not-a-list": (b'{"develop": {"label": "root"}}', ""),
    "entry-without-url": (b'{"develop": [{"label": "root"}]}', "url"),
    "control-characters": (
        b'{"develop\\u001b[31m": [{"label": "root", "url": "s3://spack-binaries/x/build_cache/index.json"}]}',
        "is not a plain name",
    ),
    "not-utf8": (b'{"d\xe9velop": []}', "not UTF-8 at byte 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_CATALOGUES))
def test_bad_catalogue_is_refused_and_nothing_is_stored(
    tmp_path: Path, docroot: Path, server: FixtureServer, case: str
) -> None:
    build(docroot)
    data, says = BAD_CATALOGUES[case]
    (docroot / CATALOG_NAME).write_bytes(data)
    config = catalog_config(tmp_path, server)
    report = sync(config)
    (line,) = report.failures
    url = f"{server.url}/{CATALOG_NAME}"
    prefix = f"source test: malformed catalogue at {url}: "
    assert line.startswith(prefix) and says in line.removeprefix(prefix), line
    assert line.removeprefix(prefix).strip(), line  # the cause is there
    assert report.stacks == [] and server.count("/develop/*") == 0
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        for table in ("releases", "stacks", "events", "specs", "http_cache"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_catalogue_url_escaping_the_bucket_fails_that_stack_only(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot)
    catalog = docroot / CATALOG_NAME
    document = json.loads(catalog.read_text())
    sha = "ab" * 32
    document["develop"].append(
        {"label": "evil", "url": f"s3://spack-binaries/../../etc/blobs/sha256/ab/{sha}"}
    )
    document["develop"].append(
        {"label": "sneaky", "url": f"s3://spack-binaries/%2e%2e/x/blobs/sha256/ab/{sha}"}
    )
    catalog.write_text(json.dumps(document))
    report = sync(catalog_config(tmp_path, server))
    failures = sorted(report.failures)
    assert len(failures) == 2
    for line, label in zip(failures, ("evil", "sneaky"), strict=True):
        assert line.startswith(f"test:develop/{label}: malformed catalogue at {server.url}/")
        assert "would escape its mirror root" in line
    assert {o.stack for o in report.stacks if o.status == "changed"} == {"root", "e4s"}
    assert all("etc" not in r.path and "%2e" not in r.path for r in server.requests)


def test_v2_hash_file_that_is_not_a_sha256_is_refused(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("r", 2)}}, layout="v2")
    (docroot / "develop/build_cache/index.json.hash").write_text("<html>oops</html>")
    report = sync(catalog_config(tmp_path, server))
    (line,) = report.failures
    url = f"{server.url}/develop/build_cache/index.json.hash"
    assert (
        line
        == f"test:develop/root: malformed index.json.hash at {url}: '<html>oops</html>' is not a sha256"
    )
    assert server.count("/develop/build_cache/index.json") == 0


# -- size caps -------------------------------------------------------------------


def limits_config(tmp_path: Path, server: FixtureServer, limits: str) -> Config:
    return catalog_config(tmp_path, server, extra=f"limits: {{{limits}}}")


def test_gigantic_catalogue_is_refused_unread(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build(docroot)
    report = sync(limits_config(tmp_path, server, "catalog: 100"))
    (line,) = report.failures
    size = (docroot / CATALOG_NAME).stat().st_size
    assert line == (
        f"source test: {server.url}/{CATALOG_NAME}: {size} bytes, over the 100-byte limit "
        "(limits.catalog); refused"
    )
    assert report.tally.bytes == 0


def test_gigantic_manifest_is_refused(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    build(docroot)
    report = sync(limits_config(tmp_path, server, "manifest: 50"))
    assert len(report.failures) == 2
    assert all("over the 50-byte limit (limits.manifest); refused" in f for f in report.failures)


def test_compressed_manifest_is_held_to_the_limit_once_decompressed(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """A gzip body's declared length is its compressed size: 1 MB of zeros in
    1 kB must still be refused by a 100 kB limit."""
    build(docroot)
    bomb = gzip.compress(b"0" * 1_000_000)
    manifest = "/develop/e4s/v3/manifests/index/index.manifest.json"
    server.add_fault(manifest, "gzipped", status=200, body=bomb, times=None)
    report = sync(limits_config(tmp_path, server, "manifest: 100000"))
    (line,) = report.failures
    assert line == (
        f"test:develop/e4s: {server.url}{manifest}: body over the 100000-byte limit "
        "(limits.manifest); refused"
    )
    assert len(bomb) < 100_000


@pytest.mark.parametrize("status", [404, 503])
def test_error_response_with_a_broken_gzip_body_reports_the_status(
    tmp_path: Path, docroot: Path, server: FixtureServer, status: int
) -> None:
    """The body of an error response is drained to keep the connection, never
    decoded: its status is what fails the stack."""
    build(docroot)
    manifest = "/develop/e4s/v3/manifests/index/index.manifest.json"
    server.add_fault(manifest, "gzipped", status=status, body=b"not gzip!", times=None)
    report = sync(catalog_config(tmp_path, server))  # 3 attempts for what is retried
    (line,) = report.failures
    assert line.startswith(f"test:develop/e4s: {server.url}{manifest}: HTTP {status}"), line
    assert server.count(manifest) == (1 if status == 404 else 3)


def test_gigantic_v3_index_is_refused_before_download(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("r", 3), "e4s": nodes("e", 30)}})
    report = sync(limits_config(tmp_path, server, "index: 8 KiB"))
    (line,) = report.failures
    assert line.startswith(f"test:develop/e4s: {server.url}/develop/e4s/blobs/sha256/")
    assert "over the 8192-byte limit (limits.index); refused" in line
    assert server.count("/develop/e4s/blobs/*") == 0  # the manifest said it all
    assert versions(tmp_path / "state.db") == {("develop", "root"): 1, ("develop", "e4s"): 0}


def test_gigantic_v2_index_is_refused_from_its_declared_length(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    info = write_v2_mirror(docroot / "develop", nodes("v", 30))
    write_catalog(docroot, {"develop": {"root": "develop"}})
    report = sync(limits_config(tmp_path, server, "index: 4096"))
    (line,) = report.failures
    assert line == (
        f"test:develop/root: {server.url}/develop/build_cache/index.json: {info.index_size} "
        "bytes, over the 4096-byte limit (limits.index); refused"
    )
    assert report.stacks[0].tally.bytes == 64  # the hash file; not one byte of the index


# -- keys named twice, unprintable or gigantic names ----------------------------------


def with_member(data: bytes, before: str, member: str) -> bytes:
    """``data`` with the JSON ``member`` put in front of ``before`` (a key's text)."""
    at = data.index(before.encode())
    return data[:at] + member.encode() + b", " + data[at:]


E0 = str(nodes("e", 1)[0]["hash"])
GOOD_E4S = {str(n["hash"]): {"spec": n, "in_buildcache": True} for n in nodes("e", 3)}
ODD_INDEXES = {
    # The same hash again, the second time not in the build cache: a decoder keeps
    # the last, and the stack would lose the spec.
    "hash-twice": (
        with_member(
            index(GOOD_E4S),
            f'"{nodes("e", 2)[1]["hash"]}"',
            f'"{E0}": {{"spec": {json.dumps(nodes("e", 1)[0])}, "in_buildcache": false}}',
        ),
        f"install {E0!r} is listed twice",
    ),
    "installs-twice": (
        index(GOOD_E4S).replace(b'"version": "8"', b'"installs": {}, "version": "8"')[:-2]
        + b', "installs": {}}}',
        "key 'installs' is named twice",
    ),
    "name-with-escape": (
        index({H: install(H, name="zlib\u001b[2J")}),
        f"install {H}: name 'zlib\\x1b[2J' holds control characters",
    ),
    "version-with-newline": (
        index({H: install(H, version="1.3\nINFO mirrorsync.sync: forged")}),
        f"install {H}: version '1.3\\nINFO mirrorsync.sync: forged' holds control characters",
    ),
    "name-of-5-mb": (
        index({H: install(H, name="z" * 5_000_000)}),
        "name is longer than 256 characters (at $.database.installs[...].spec.name)",
    ),
    "variant-with-escape": (
        index({H: install(H, parameters={"build_type": "Release\u009b2J"})}),
        f"install {H}: variant 'build_type=Release\\x9b2J' holds control characters",
    ),
}


@pytest.mark.parametrize("case", sorted(ODD_INDEXES))
def test_index_naming_a_key_twice_or_an_unprintable_name_is_refused(
    tmp_path: Path, docroot: Path, server: FixtureServer, case: str
) -> None:
    build(docroot)
    data, problem = ODD_INDEXES[case]
    blob_path = serve_index(docroot, data)
    config = catalog_config(tmp_path, server)
    report = sync(config)
    (line,) = report.failures
    url = f"{server.url}{blob_path}"
    assert line == f"test:develop/e4s: malformed build cache index at {url}: {problem}"
    assert_nothing_stored_for_e4s(config.database_path, {H})


def test_resync_of_an_index_listing_a_hash_twice_keeps_the_stack(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """The reproduction: the second entry, not in the build cache, emptied the stack."""
    build(docroot)
    config = catalog_config(tmp_path, server)
    assert sync(config).exit_code == 0
    data, problem = ODD_INDEXES["hash-twice"]
    blob_path = serve_index(docroot, data)
    report = sync(config)
    assert report.failures == [
        f"test:develop/e4s: malformed build cache index at {server.url}{blob_path}: {problem}"
    ]
    assert versions(config.database_path) == {("develop", "root"): 1, ("develop", "e4s"): 1}
    assert not any(kind == "spec.removed" for kind, _, _ in event_counts(config.database_path))


def test_catalogue_naming_a_release_twice_is_refused_and_retires_nothing(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """The reproduction: ``develop`` again with only ``root`` retired e4s and sent a
    spec.removed for each of its specs."""
    build(docroot)
    config = catalog_config(tmp_path, server)
    assert sync(config).exit_code == 0
    catalog = docroot / CATALOG_NAME
    document = json.loads(catalog.read_text())
    again = json.dumps([e for e in document["develop"] if e["label"] == "root"])
    catalog.write_bytes(catalog.read_bytes().rstrip()[:-1] + f', "develop": {again}}}'.encode())
    report = sync(config)
    assert report.failures == [
        f"source test: malformed catalogue at {server.url}/{CATALOG_NAME}: "
        "release 'develop' is named twice"
    ]
    assert versions(config.database_path) == {("develop", "root"): 1, ("develop", "e4s"): 1}
    assert not any(kind.endswith(".removed") for kind, _, _ in event_counts(config.database_path))


def test_a_spec_stored_by_another_stack_is_taken_by_name_and_version_alone(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """A spec the database holds already is not decoded again when another stack
    lists it: only its name and version are read (and match the stored record),
    so a field a new spec would be refused for changes nothing, and the record
    root stored stays as it was."""
    build(docroot)
    config = catalog_config(tmp_path, server)
    assert sync(config).exit_code == 0
    taken = nodes("r", 1)[0]  # root's
    h = str(taken["hash"])
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        stored = conn.execute("SELECT * FROM specs WHERE hash = ?", (h,)).fetchall()
    odd = {**taken, "arch": 5}  # refused in a new spec: an architecture is an object
    serve_index(docroot, index({**GOOD_E4S, h: {"spec": odd, "in_buildcache": True}}))
    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert versions(config.database_path)[("develop", "e4s")] == 2
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        assert conn.execute("SELECT * FROM specs WHERE hash = ?", (h,)).fetchall() == stored
        held = conn.execute(
            "SELECT count(*) FROM memberships m JOIN specs s ON s.id = m.spec_id"
            " JOIN stacks st ON st.id = m.stack_id"
            " WHERE s.hash = ? AND st.name = 'e4s' AND m.left IS NULL",
            (h,),
        ).fetchone()
    assert held == (1,)


def test_v2_spec_file_that_is_not_utf8_is_malformed_and_the_run_goes_on(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """One byte that is not UTF-8 in a spec file used to end the whole run."""
    specs = nodes("v", 3)
    infos = build_catalog_from_specs(docroot, {"v0.23.1": {"root": specs}}, layout="v2")
    spec_file = docroot / infos["v0.23.1"]["root"].spec_files[str(specs[1]["hash"])]
    spec_file.write_bytes(spec_file.read_bytes().replace(b'"sha256"', b'"sha\xe956"', 1))
    config = catalog_config(tmp_path, server)
    report = sync(config)
    assert report.exit_code == 0, report.failures
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        rows = dict(
            conn.execute(
                "SELECT s.hash, m.status || ': ' || coalesce(m.problem, '')"
                " FROM spec_manifests m JOIN specs s ON s.id = m.spec_id"
            ).fetchall()
        )
    bad = rows.pop(str(specs[1]["hash"]))
    assert bad.startswith("malformed: ") and "malformed v2 spec file at " in bad, bad
    assert re.search(r": not UTF-8 at byte \d+$", bad), bad
    assert set(rows.values()) == {"ok: "}


def test_a_hash_stored_under_another_name_refuses_the_second_index(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """A hash names its content: listed by another stack as another name@version,
    the first record stays and the conflicting index is refused, naming both."""
    build(docroot)
    config = catalog_config(tmp_path, server)
    assert sync(config).exit_code == 0
    taken = nodes("r", 1)[0]  # root's, stored as pkg-r@1.0
    forged = {**taken, "name": "evil", "version": "6.6.6"}
    h = str(taken["hash"])
    blob_path = serve_index(
        docroot, index({**GOOD_E4S, h: {"spec": forged, "in_buildcache": True}})
    )
    report = sync(config)
    assert report.failures == [
        f"test:develop/e4s: malformed build cache index at {server.url}{blob_path}: "
        f"hash {h} is evil@6.6.6 here but was stored as pkg-r@1.0 by test:develop/root; "
        "a hash names its content, so one of the two mirrors is broken or hostile: "
        "the first record is kept"
    ]
    assert {o.stack: o.status for o in report.stacks} == {"root": "unchanged", "e4s": "failed"}
    assert versions(config.database_path) == {("develop", "root"): 1, ("develop", "e4s"): 1}
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        assert conn.execute("SELECT name, version FROM specs WHERE hash = ?", (h,)).fetchall() == [
            ("pkg-r", "1.0")
        ]
    # The same hash with the same name and version is no conflict: e4s takes it in.
    serve_index(docroot, index({**GOOD_E4S, h: {"spec": taken, "in_buildcache": True}}))
    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert versions(config.database_path)[("develop", "e4s")] == 2


def test_a_hash_listed_under_two_names_in_one_run_is_stored_once(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """Two stacks of one first sync list a hash as different name@versions: the
    stack that commits first keeps its record, the other's index is refused,
    though the run knows the first record without reading it again."""
    build(docroot)
    taken = nodes("r", 1)[0]  # root's: pkg-r@1.0
    h = str(taken["hash"])
    forged = {**taken, "name": "evil", "version": "6.6.6"}
    serve_index(docroot, index({**GOOD_E4S, h: {"spec": forged, "in_buildcache": True}}))
    config = catalog_config(tmp_path, server)
    report = sync(config)
    statuses = {o.stack: o.status for o in report.stacks}
    assert sorted(statuses.values()) == ["changed", "failed"], statuses
    (kept,) = [stack for stack, status in statuses.items() if status == "changed"]
    (refused,) = [stack for stack, status in statuses.items() if status == "failed"]
    here, stored = ("pkg-r@1.0", "evil@6.6.6") if refused == "root" else ("evil@6.6.6", "pkg-r@1.0")
    (failure,) = report.failures
    assert f"test:develop/{refused}: malformed build cache index at " in failure, failure
    assert f"hash {h} is {here} here but was stored as {stored} by test:develop/{kept}" in failure
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        assert conn.execute(
            "SELECT name || '@' || version FROM specs WHERE hash = ?", (h,)
        ).fetchall() == [(stored,)]
        members = conn.execute(
            "SELECT st.name FROM memberships m JOIN stacks st ON st.id = m.stack_id"
            " JOIN specs s ON s.id = m.spec_id WHERE s.hash = ?",
            (h,),
        ).fetchall()
    assert members == [(kept,)]


def test_a_hash_the_run_knows_is_compared_with_its_record(tmp_path: Path) -> None:
    """A stored record this run read once (to compare it, for a second stack) is
    kept in memory and compared there for a third: still refused when it differs,
    and nothing of the refused snapshot is kept."""
    from mirrorsync.errors import FormatError
    from mirrorsync.formats.index import SpecInfo, SpecName
    from mirrorsync.store import Store, writes

    h = fake_hash("shared")
    at = "2026-12-02T00:00:00.000000Z"

    async def run() -> str:
        async with await Store.open(tmp_path / "state.db") as store:
            source = await writes.ensure_source(store, "t", "catalog", "http://x.invalid/")
            rows = [await writes.ensure_stack(store, source, "develop", n) for n in "abc"]
            full = SpecInfo(h, "zlib", "1.3", "linux", "ubuntu22.04", "x86_64", None, ())
            await writes.commit_snapshot(
                store, writes.Snapshot(rows[0].id, None, None, [full], ()), at
            )
            same = writes.Snapshot(rows[1].id, None, None, [SpecName(h, "zlib", "1.3")], ())
            await writes.commit_snapshot(store, same, at)
            assert store.known_specs[h][1:] == ("zlib", "1.3")  # read once, for stack b
            forged = writes.Snapshot(rows[2].id, None, None, [SpecName(h, "evil", "6.6.6")], ())
            try:
                await writes.commit_snapshot(store, forged, at)
            except FormatError as exc:
                return str(exc)
            raise AssertionError("the forged record was taken in")

    problem = anyio.run(run)
    assert f"hash {h} is evil@6.6.6 here but was stored as zlib@1.3 by t:develop/a" in problem
    with sqlite3.connect(tmp_path / "state.db") as conn:
        held = conn.execute(
            "SELECT st.name FROM memberships m JOIN stacks st ON st.id = m.stack_id ORDER BY 1"
        ).fetchall()
    assert held == [("a",), ("b",)]
