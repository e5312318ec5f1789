"""A copy holds only verified content (issue 25), with real gpg keys.

Upstream is a v3 build cache signed with a key the source pins (``trusted_keys``);
each test breaks some specs the way an attacker (or a broken upstream) would, and
checks that the copy never holds a manifest or blob that failed, that what needs
a failed spec is left out with it, and that ``on_error`` decides between keeping
the last published state (``fail``) and publishing the rest (``skip``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import QUICK_RETRIES, catalog_config_text, database_value, run_cli, write_config
from mirrorsync.config import load_config
from mirrorsync.fixture.build import MirrorInfo, build_catalog_from_specs, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import (
    export_public_key,
    fingerprints,
    gpg_clearsign,
)
from mirrorsync.fixture.specs import Node, fake_hash, spec_node
from mirrorsync.store import Store
from mirrorsync.store import mirrors as store_mirrors
from mirrorsync.store.mirrors import LeftOut

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")

INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"
KEY_INDEX = "v3/manifests/key/keys.manifest.json"


def _node(name: str, deps: tuple[str, ...] = ()) -> Node:
    return spec_node(name, "1.0", fake_hash(name), dependencies=[(d, fake_hash(d)) for d in deps])


def _config(tmp_path: Path, server: FixtureServer, fingerprint: str, copy: str = "") -> Path:
    return write_config(
        tmp_path / "c.yaml",
        f"""
database: {database_value(tmp_path)}
sources:
  - name: site
    kind: mirror
    url: {server.url}/m
    verify_signatures: true
    trusted_keys: [{fingerprint}]
    manifests: all
mirrors:
  - name: local
    path: {tmp_path / "copy"}
    source: site
    delete_after: 0
{copy}
{QUICK_RETRIES}""",
    )


def _body(clearsigned: bytes) -> str:
    """The signed text of a clear-signed document (the fixture's JSON has no dash lines)."""
    body = clearsigned.decode().split("\n\n", 1)[1]
    return body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]


def _records(data: bytes) -> list[dict[str, Any]]:
    text = _body(data) if data.startswith(b"-----BEGIN PGP") else data.decode()
    records: list[dict[str, Any]] = json.loads(text)["data"]
    return records


def _copy_binaries(copy: Path) -> dict[str, str]:
    """hash -> name of each binary the copy's published index lists; every file checked."""
    (record,) = json.loads((copy / INDEX_MANIFEST).read_bytes())["data"]
    blob = copy / "blobs/sha256" / record["checksum"][:2] / record["checksum"]
    installs = json.loads(blob.read_bytes())["database"]["installs"]
    out = {}
    for spec_hash, install in installs.items():
        if not install["in_buildcache"]:
            continue
        name = install["spec"]["name"]
        out[spec_hash] = name
        rel = f"v3/manifests/spec/{name}/{name}-1.0-{spec_hash}.spec.manifest.json"
        for r in _records((copy / rel).read_bytes()):
            data = (copy / "blobs/sha256" / r["checksum"][:2] / r["checksum"]).read_bytes()
            assert len(data) == r["contentLength"]
            assert hashlib.sha256(data).hexdigest() == r["checksum"]
    return out


def _left_out(config: Path) -> list[LeftOut]:
    loaded = load_config(str(config))

    async def go() -> list[LeftOut]:
        async with await Store.open(loaded.database_path) as store:
            row = await store_mirrors.find(store, "local")
            assert row is not None
            return await store_mirrors.left_out(store, row.id)

    return anyio.run(go)


def _cr_forgery(genuine: bytes, evil_body: str) -> bytes:
    """An unsigned clear-sign block whose lines end in a bare CR, then a genuine block:
    gpg skips the CR text as garbage and verifies the genuine block."""
    evil = (
        "-----BEGIN PGP SIGNED MESSAGE-----\rHash: SHA512\r\r"
        + evil_body.replace("\n", "\r")
        + "\r-----BEGIN PGP SIGNATURE-----\r\rAAAA\r-----END PGP SIGNATURE-----\r"
    )
    return evil.encode() + b"\n" + genuine


def _tampered(genuine: bytes, other: dict[str, Any]) -> bytes:
    """The signed text edited to name another real blob (right length and digest)."""
    text = genuine.decode()
    (tarball,) = [r for r in _records(genuine) if "install" in r["mediaType"]]
    text = text.replace(tarball["checksum"], other["checksum"]).replace(
        f'"contentLength":{tarball["contentLength"]}', f'"contentLength":{other["contentLength"]}'
    )
    assert text != genuine.decode()
    return text.encode()


@pytest.mark.usefixtures("backend")
def test_only_verified_specs_enter_a_copy_fail_keeps_the_last_state_skip_the_rest(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path, other_home: Path
) -> None:
    names = ["good", "untrusted", "tampered", "unsigned", "forged", "swapped"]
    nodes = [_node(n) for n in names]
    nodes += [_node("user", ("good",)), _node("needer", ("untrusted",))]
    info = write_v3_mirror(docroot / "m", nodes, gpg_home=gpg_home)
    (fingerprint,) = fingerprints(gpg_home)
    config = _config(tmp_path, server, fingerprint)
    copy = tmp_path / "copy"

    first = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert set(_copy_binaries(copy).values()) == set(names) | {"user", "needer"}
    published = (copy / INDEX_MANIFEST).read_bytes()
    genuine = {n["name"]: (docroot / "m" / info.spec_files[n["hash"]]).read_bytes() for n in nodes}

    def path(name: str) -> Path:
        return docroot / "m" / info.spec_files[fake_hash(name)]

    good_tarball = next(r for r in _records(genuine["good"]) if "install" in r["mediaType"])
    path("untrusted").write_bytes(gpg_clearsign(other_home, _body(genuine["untrusted"])))
    path("tampered").write_bytes(_tampered(genuine["tampered"], good_tarball))
    path("unsigned").write_text(_body(genuine["unsigned"]))
    evil = _body(_tampered(genuine["forged"], good_tarball))
    path("forged").write_bytes(_cr_forgery(genuine["forged"], evil))
    path("swapped").write_bytes(genuine["good"])  # a genuine manifest, of another spec

    # on_error: fail (the default): the run fails, the copy keeps its last state.
    failed = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert failed.returncode == 1
    assert "mirror local: 6 specs left out" in failed.stderr
    assert "with on_error: fail the copy keeps its last published state" in failed.stderr
    assert (copy / INDEX_MANIFEST).read_bytes() == published
    assert set(_copy_binaries(copy).values()) == set(names) | {"user", "needer"}
    for name in names[1:]:  # what the copy holds of them is still the genuine manifest
        held = copy / info.spec_files[fake_hash(name)]
        assert held.read_bytes() == genuine[name]
    check = run_cli("-c", str(config), "status", "--check", cwd=tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "mirror local: last publish failed: 6 specs left out" in check.stdout
    for name in [*names[1:], "needer"]:  # each named, with why
        assert f"mirror local: left out {name}/{fake_hash(name)[:7]}: " in check.stdout, name

    # on_error: skip: the rest is published; each left-out spec is named, with why.
    _config(tmp_path, server, fingerprint, "    on_error: skip")
    skipped = run_cli("-c", str(config), "mirror", cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert set(_copy_binaries(copy).values()) == {"good", "user"}, skipped.stdout + skipped.stderr
    for name in [*names[1:], "needer"]:
        assert not (copy / info.spec_files[fake_hash(name)]).exists(), name
    assert not (copy / good_tarball["checksum"]).exists()
    reasons = {x.name: x.reason for x in _left_out(config)}
    assert set(reasons) == {*names[1:], "needer"}
    assert "a key not in trusted_keys" in reasons["untrusted"]
    assert "bad signature" in reasons["tampered"]
    assert "not signed" in reasons["unsigned"]
    assert "bare CR" in reasons["forged"]
    assert "another spec" in reasons["swapped"]
    assert reasons["needer"] == f"needs untrusted {fake_hash('untrusted')[:7]}, left out"
    check = run_cli("-c", str(config), "status", "--check", cwd=tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "last publish failed" not in check.stdout  # published, with the rest
    for name, reason in reasons.items():
        assert f"mirror local: left out {name}/{fake_hash(name)[:7]}: {reason}" in check.stdout
    for name, reason in reasons.items():
        assert f"mirror local: left out {name} {fake_hash(name)}: {reason}" in skipped.stdout
    as_json = run_cli("-c", str(config), "mirror", "--json", cwd=tmp_path)
    (outcome,) = json.loads(as_json.stdout)
    assert {x["name"] for x in outcome["left_out"]} == set(reasons)
    # The key index: exactly the trusted key, which signed the copied manifests.
    (record,) = _records((copy / KEY_INDEX).read_bytes())
    key_index = copy / "blobs/sha256" / record["checksum"][:2] / record["checksum"]
    assert list(json.loads(key_index.read_bytes())["keys"]) == [fingerprint]


def _upstream(docroot: Path, gpg_home: Path, nodes: list[Node], **kw: Any) -> MirrorInfo:
    return write_v3_mirror(docroot / "m", nodes, gpg_home=gpg_home, **kw)


def test_a_corrupt_blob_or_an_odd_name_leaves_out_that_spec_and_its_dependents(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path
) -> None:
    nodes = [_node("good"), _node("corrupt"), _node("user", ("corrupt",)), _node("..")]
    nodes.append(spec_node("../../../../tmp/x", "1.0", fake_hash("escape")))
    # The index blob is gzip-compressed, as its record says: the copy reads it as the sync.
    info = _upstream(docroot, gpg_home, nodes, index_compression="gzip")
    blob = docroot / "m" / info.tarballs[fake_hash("corrupt")]
    data = blob.read_bytes()
    blob.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same length, another digest
    (fingerprint,) = fingerprints(gpg_home)
    config = _config(tmp_path, server, fingerprint, "    on_error: skip")

    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert "not UTF-8" not in done.stderr
    copy = tmp_path / "copy"
    assert set(_copy_binaries(copy).values()) == {"good"}
    reasons = {x.name: x.reason for x in _left_out(config)}
    assert reasons["corrupt"].startswith("corrupt blob: ")
    assert reasons["user"] == f"needs corrupt {fake_hash('corrupt')[:7]}, left out"
    assert reasons[".."] == "name, version or hash not safe as a file name"
    assert reasons["../../../../tmp/x"] == "name, version or hash not safe as a file name"
    assert not (copy / info.tarballs[fake_hash("corrupt")]).exists()
    assert not any("tmp" in p.name for p in copy.rglob("*"))


def test_a_manifest_changed_after_the_crawl_is_not_copied_nor_the_key_that_signed_it(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path, other_home: Path
) -> None:
    nodes = [_node("good"), _node("later"), _node("plain")]
    info = _upstream(docroot, gpg_home, nodes)
    (fingerprint,) = fingerprints(gpg_home)
    (attacker,) = fingerprints(other_home)
    config = _config(tmp_path, server, fingerprint, "    on_error: skip")
    text = config.read_text()
    # The crawl runs alone (no copy yet); then upstream changes two manifests.
    config.write_text(text.split("mirrors:")[0] + QUICK_RETRIES)
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    config.write_text(text)
    later = docroot / "m" / info.spec_files[fake_hash("later")]
    later.write_bytes(gpg_clearsign(other_home, _body(later.read_bytes())))
    plain = docroot / "m" / info.spec_files[fake_hash("plain")]
    plain.write_text(_body(plain.read_bytes()))
    # ... and lists the attacker's key in its own key index, as Spack would publish it.
    keys = docroot / "m/v3/manifests/key"

    def blob(data: bytes, media_type: str) -> bytes:
        digest = hashlib.sha256(data).hexdigest()
        (docroot / "m/blobs/sha256" / digest[:2]).mkdir(parents=True, exist_ok=True)
        (docroot / "m/blobs/sha256" / digest[:2] / digest).write_bytes(data)
        record = {
            "contentLength": len(data),
            "mediaType": media_type,
            "compression": "none",
            "checksumAlgorithm": "sha256",
            "checksum": digest,
        }
        return json.dumps({"version": 3, "data": [record]}).encode()

    key = export_public_key(other_home, attacker)
    (keys / f"{attacker}.key.manifest.json").write_bytes(blob(key, "application/pgp-keys"))
    index = json.dumps({"keys": {fingerprint: {}, attacker: {}}}).encode()
    (keys / "keys.manifest.json").write_bytes(blob(index, "application/vnd.spack.keyindex.v1+json"))

    done = run_cli("-c", str(config), "mirror", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "copy"
    assert set(_copy_binaries(copy).values()) == {"good"}
    reasons = {x.name: x.reason for x in _left_out(config)}
    assert reasons == {
        "later": "manifest changed upstream since the crawl verified it",
        "plain": "manifest changed upstream since the crawl verified it",
    }
    (record,) = _records((copy / KEY_INDEX).read_bytes())
    key_index = copy / "blobs/sha256" / record["checksum"][:2] / record["checksum"]
    assert list(json.loads(key_index.read_bytes())["keys"]) == [fingerprint]
    assert not (copy / f"v3/manifests/key/{attacker}.key.manifest.json").exists()


def test_a_copy_needs_a_source_that_crawls_manifests(tmp_path: Path, server: FixtureServer) -> None:
    config = _config(tmp_path, server, "A" * 40)
    config.write_text(config.read_text().replace("manifests: all", "manifests: none"))
    done = run_cli("-c", str(config), "mirror", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "mirrors[0].source" in line and "manifests: new or all" in line


def test_turning_verification_on_reads_every_manifest_again_before_copying(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path
) -> None:
    nodes = [_node("good"), _node("user", ("good",))]
    _upstream(docroot, gpg_home, nodes)
    (fingerprint,) = fingerprints(gpg_home)
    config = _config(tmp_path, server, fingerprint)
    text = config.read_text()
    unchecked = text.replace("    verify_signatures: true\n", "").replace(
        f"    trusted_keys: [{fingerprint}]\n", ""
    )
    config.write_text(unchecked.replace("manifests: all", "manifests: new"))
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    copy = tmp_path / "copy"
    assert set(_copy_binaries(copy).values()) == {"good", "user"}
    assert not (copy / KEY_INDEX).exists()  # nothing verified, so no key is vouched for

    config.write_text(text.replace("manifests: all", "manifests: new"))
    before = server.count("*.spec.manifest.json")
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert server.count("*.spec.manifest.json") - before == 2  # both crawled again
    (record,) = _records((copy / KEY_INDEX).read_bytes())
    key_index = copy / "blobs/sha256" / record["checksum"][:2] / record["checksum"]
    assert list(json.loads(key_index.read_bytes())["keys"]) == [fingerprint]


def test_a_spec_bad_in_one_stack_is_copied_from_a_stack_where_it_verified(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path
) -> None:
    nodes = [_node("good"), _node("both")]
    infos = build_catalog_from_specs(
        docroot, {"develop": {"e4s": nodes, "root": nodes}}, gpg_home=gpg_home
    )["develop"]
    bad = docroot / infos["e4s"].spec_files[fake_hash("both")]  # e4s is read first
    bad.write_text(_body(bad.read_bytes()))
    (fingerprint,) = fingerprints(gpg_home)
    config = write_config(
        tmp_path / "c.yaml",
        catalog_config_text(
            tmp_path,
            server,
            extra=f"    verify_signatures: true\n    trusted_keys: [{fingerprint}]\n"
            f"mirrors:\n  - {{name: local, path: {tmp_path / 'copy'}, source: test,"
            " release: develop}",
            http=QUICK_RETRIES,
        ),
    )
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert "mirror local published" in done.stderr, done.stderr  # the sync fails, not the copy
    assert set(_copy_binaries(tmp_path / "copy").values()) == {"good", "both"}
    root = infos["root"].spec_files[fake_hash("both")]
    held = tmp_path / "copy" / ("v3/" + root.split("/v3/", 1)[1])
    assert held.read_bytes() == (docroot / root).read_bytes()  # the verified one


def test_a_file_planted_at_a_blob_address_in_the_copy_is_checked_not_trusted(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path
) -> None:
    info = _upstream(docroot, gpg_home, [_node("good")])
    rel = info.tarballs[fake_hash("good")]  # blobs/sha256/xx/<hex>
    planted = tmp_path / "copy" / rel
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"\0" * (docroot / "m" / rel).stat().st_size)  # right size only
    (fingerprint,) = fingerprints(gpg_home)
    done = run_cli("-c", str(_config(tmp_path, server, fingerprint)), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(_copy_binaries(tmp_path / "copy").values()) == {"good"}  # digests checked
    assert planted.read_bytes() == (docroot / "m" / rel).read_bytes()
