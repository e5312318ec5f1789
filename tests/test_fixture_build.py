"""The generated build caches are self-consistent, deterministic and follow FORMATS.md."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dbstate import SEED_NET_CHANGE
from mirrorsync.fixture.build import (
    CATALOG_NAME,
    build_catalog_from_specs,
    build_from_seed,
    clearsign,
    load_seed,
    write_catalog,
    write_v2_mirror,
    write_v3_mirror,
)
from mirrorsync.fixture.specs import fake_hash, spec_node, specs_from_page, synthetic_specs
from mirrorsync.formats.pages import parameters_to_variants

HASH = re.compile(r"^[a-z0-9]{32}$")
FLAGS = ["cflags", "cppflags", "cxxflags", "fflags", "ldflags", "ldlibs"]


def unclearsign(text: str) -> str:
    """Cut the body out of PGP clear-signed text, checking its frame (independent of src/)."""
    lines = text.split("\n")
    assert lines[0] == "-----BEGIN PGP SIGNED MESSAGE-----" and lines[2] == ""
    assert lines[1] in ("Hash: SHA512", "Hash: SHA256")  # both occur on real mirrors
    start = lines.index("-----BEGIN PGP SIGNATURE-----")
    assert lines[start + 1] == "" and lines[-2:] == ["-----END PGP SIGNATURE-----", ""]
    armour, crc = lines[start + 2 : -3], lines[-3]
    assert re.fullmatch(r"=[A-Za-z0-9+/]{4}", crc)
    assert all(len(line) == 64 for line in armour[:-1])
    assert base64.b64decode("".join(armour))[0] == 0x89  # an old-format signature packet
    body = lines[3:start]
    assert not any(line.startswith("-") and not line.startswith("- ") for line in body)
    return "\n".join(line[2:] if line.startswith("- ") else line for line in body)


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def cached_hashes(index: bytes) -> set[str]:
    installs = json.loads(index)["database"]["installs"]
    return {h for h, entry in installs.items() if entry["in_buildcache"]}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- spec nodes ----------------------------------------------------------------


def test_v8_node_shape() -> None:
    h, dep = fake_hash("a"), fake_hash("b")
    node = spec_node(
        "zlib", "1.3", h, parameters={"shared": True}, dependencies=[("gcc", dep), ("cmake", dep)]
    )
    assert HASH.match(h) and set(h) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert node["hash"] == h and "compiler" not in node
    target = node["arch"]["target"]
    assert node["arch"]["platform_os"] == "ubuntu24.04" and target["name"] == "x86_64_v3"
    assert {"vendor", "features", "generation", "parents"} <= set(target)
    assert "avx2" in target["features"] and target["parents"] == ["x86_64_v2"]
    assert list(node["parameters"]) == ["shared", *FLAGS]
    assert all(node["parameters"][f] == [] for f in FLAGS)
    gcc, cmake = node["dependencies"]
    assert gcc == {
        "name": "gcc",
        "hash": dep,
        "parameters": {"deptypes": ["build"], "virtuals": ["c", "cxx"]},
    }
    assert cmake["parameters"]["deptypes"] == ["build", "link"]
    assert "dependencies" not in spec_node("zlib", "1.3", h)


def test_v7_nodes_carry_compiler_and_both_target_forms() -> None:
    nodes = [spec_node("zlib", "1.3", fake_hash(str(i)), db_version=7) for i in range(40)]
    assert all(n["compiler"] == {"name": "gcc", "version": "11.4.0"} for n in nodes)
    forms = {type(n["arch"]["target"]) for n in nodes}
    assert forms == {str, dict}
    node = spec_node("zlib", "1.3", fake_hash("x"), compiler=("llvm", "18.1.8"), db_version=7)
    assert node["compiler"] == {"name": "llvm", "version": "18.1.8"}
    with pytest.raises(ValueError):
        spec_node("zlib", "1.3", fake_hash("x"), db_version=6)


def test_synthetic_specs_are_a_deterministic_dag() -> None:
    nodes = synthetic_specs(2000, seed=3)
    assert nodes == synthetic_specs(2000, seed=3)
    assert nodes[:500] == synthetic_specs(500, seed=3)
    assert nodes[0]["hash"] != synthetic_specs(1, seed=4)[0]["hash"]
    position = {n["hash"]: i for i, n in enumerate(nodes)}
    assert len(position) == len(nodes) and all(HASH.match(h) for h in position)
    deps = [d for n in nodes for d in n.get("dependencies", [])]
    assert 4.5 < len(deps) / len(nodes) < 7
    for i, node in enumerate(nodes):
        names = [d["name"] for d in node.get("dependencies", [])]
        assert len(names) == len(set(names)) and node["name"] not in names
        assert all(position[d["hash"]] < i for d in node.get("dependencies", []))
    assert len({n["name"] for n in nodes}) >= 15
    assert len({n["arch"]["target"]["name"] for n in nodes}) >= 5
    assert any(len(n["arch"]["target"]["features"]) > 25 for n in nodes)
    assert all("compiler" in n for n in synthetic_specs(50, db_version=7))


def test_seed_page_becomes_stacks_of_nodes() -> None:
    page = load_seed("000")
    stacks = specs_from_page(page)
    assert {k: len(v) for k, v in stacks.items()} == page.meta.num_specs_by_stack
    by_hash = {n["hash"]: n for n in stacks["root"]}
    for spec in page.specs:
        node = by_hash[spec.hash]
        assert (node["name"], node["version"]) == (page.package, spec.version)
        assert (
            node["arch"]["platform_os"] == spec.os and node["arch"]["target"]["name"] == spec.target
        )
        assert parameters_to_variants(node["parameters"]) == spec.variants
        assert "compiler" not in node  # compiler "none": database v8


# -- layouts -------------------------------------------------------------------


@pytest.mark.parametrize("signed", [True, False])
def test_v3_mirror_is_consistent(tmp_path: Path, signed: bool) -> None:
    specs, uncached = synthetic_specs(25), synthetic_specs(30)[25:]
    info = write_v3_mirror(tmp_path, specs, signed=signed, uncached=uncached)
    assert read_json(tmp_path / "v3/layout.json") == {"signing": "gpg"}
    manifest = read_json(tmp_path / "v3/manifests/index/index.manifest.json")
    assert manifest["version"] == 3
    (record,) = manifest["data"]
    assert record["mediaType"] == "application/vnd.spack.db.v8+json"
    assert (record["compression"], record["checksumAlgorithm"]) == ("none", "sha256")
    blob = (tmp_path / info.index_blob_relpath).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    assert record["checksum"] == info.index_checksum == digest
    assert record["contentLength"] == info.index_size == len(blob)
    assert info.index_blob_relpath == f"blobs/sha256/{digest[:2]}/{digest}"
    installs = json.loads(blob)["database"]["installs"]
    assert json.loads(blob)["database"]["version"] == "8"
    assert cached_hashes(blob) == {n["hash"] for n in specs} and info.spec_count == 25
    assert {h for h, e in installs.items() if not e["in_buildcache"]} == {
        n["hash"] for n in uncached
    }
    assert b"\n" not in blob and b": " not in blob  # minified

    files = sorted((tmp_path / "v3/manifests/spec").rglob("*.spec.manifest.json"))
    assert len(files) == 25 and sorted(tmp_path / p for p in info.spec_files.values()) == files
    for path in files:
        name, version, dag_hash = path.name.removesuffix(".spec.manifest.json").rsplit("-", 2)
        assert path.parent.name == name and HASH.match(dag_hash)
        text = path.read_text()
        assert text.startswith("-----BEGIN PGP SIGNED MESSAGE-----") == signed
        doc = json.loads(unclearsign(text) if signed else text)
        tarball, spec = doc["data"]
        assert tarball["mediaType"] == "application/vnd.spack.install.v2.tar+gzip"
        assert spec["mediaType"] == "application/vnd.spack.spec.v5+json"
        blobs = {}
        for rec in (tarball, spec):
            assert rec["compression"] == "gzip" and rec["checksumAlgorithm"] == "sha256"
            data = (tmp_path / f"blobs/sha256/{rec['checksum'][:2]}/{rec['checksum']}").read_bytes()
            assert hashlib.sha256(data).hexdigest() == rec["checksum"]
            assert len(data) == rec["contentLength"]
            blobs[rec["mediaType"]] = gzip.decompress(data)
        spec_doc = json.loads(blobs[spec["mediaType"]])
        (node,) = spec_doc["spec"]["nodes"]
        assert (node["name"], node["version"], node["hash"]) == (name, version, dag_hash)
        assert node == installs[dag_hash]["spec"]
        tar_sha = hashlib.sha256((tmp_path / info.tarballs[dag_hash]).read_bytes()).hexdigest()
        assert spec_doc["binary_cache_checksum"] == {"hash_algorithm": "sha256", "hash": tar_sha}


def test_v3_index_only_and_database_v7(tmp_path: Path) -> None:
    info = write_v3_mirror(
        tmp_path, synthetic_specs(10, db_version=7), db_version=7, manifests=False
    )
    record = read_json(tmp_path / "v3/manifests/index/index.manifest.json")["data"][0]
    assert record["mediaType"] == "application/vnd.spack.db.v7+json"
    assert json.loads(info.index_path.read_bytes())["database"]["version"] == "7"
    assert not (tmp_path / "v3/manifests/spec").exists() and not info.spec_files


@pytest.mark.parametrize("signed", [True, False])
def test_v2_mirror_is_consistent(tmp_path: Path, signed: bool) -> None:
    specs = [*synthetic_specs(12, db_version=7), spec_node("zlib", "1.3", fake_hash("v8"))]
    info = write_v2_mirror(tmp_path, specs, signed=signed)
    index = (tmp_path / "build_cache/index.json").read_bytes()
    digest = hashlib.sha256(index).hexdigest()
    assert (tmp_path / "build_cache/index.json.hash").read_text().strip() == digest
    assert (info.layout, info.index_checksum, info.index_size) == ("v2", digest, len(index))
    assert json.loads(index)["database"]["version"] == "7"
    assert cached_hashes(index) == {n["hash"] for n in specs}
    suffix = ".spec.json.sig" if signed else ".spec.json"
    files = sorted((tmp_path / "build_cache").glob("*.spec.json*"))
    assert len(files) == 13 and all(p.name.endswith(suffix) for p in files)
    for node in specs:
        target = node["arch"]["target"]
        target = target if isinstance(target, str) else target["name"]
        compiler = node.get("compiler", {"name": "none", "version": "none"})
        arch = f"linux-{node['arch']['platform_os']}-{target}"
        comp = f"{compiler['name']}-{compiler['version']}"
        stem = f"{arch}-{comp}-{node['name']}-{node['version']}-{node['hash']}"
        text = (tmp_path / "build_cache" / (stem + suffix)).read_text()
        doc = json.loads(unclearsign(text) if signed else text)
        assert doc["spec"] == {"_meta": {"version": 4}, "nodes": [node]}
        spack = (
            tmp_path / f"build_cache/{arch}/{comp}/{node['name']}-{node['version']}/{stem}.spack"
        )
        assert doc["binary_cache_checksum"] == {
            "hash_algorithm": "sha256",
            "hash": hashlib.sha256(spack.read_bytes()).hexdigest(),
        }
        assert "buildinfo" in doc and gzip.decompress(spack.read_bytes())


def test_rewrite_keeps_blobs_drops_stale_spec_files_and_leaves_unchanged_files(
    tmp_path: Path,
) -> None:
    specs = synthetic_specs(8)
    first = write_v3_mirror(tmp_path, specs)
    layout = tmp_path / "v3/layout.json"
    mtime = layout.stat().st_mtime_ns
    second = write_v3_mirror(tmp_path, specs[2:])
    assert layout.stat().st_mtime_ns == mtime  # same bytes: file untouched
    assert first.index_path.exists() and second.index_path.exists()
    assert first.index_checksum != second.index_checksum
    manifest = read_json(tmp_path / "v3/manifests/index/index.manifest.json")
    assert manifest["data"][0]["checksum"] == second.index_checksum
    spec_files = sorted((tmp_path / "v3/manifests/spec").rglob("*.json"))
    assert spec_files == sorted(tmp_path / p for p in second.spec_files.values())
    assert all((tmp_path / p).exists() for p in first.tarballs.values())

    v2 = tmp_path / "v2"
    write_v2_mirror(v2, specs)
    write_v2_mirror(v2, specs[5:])
    assert len(list((v2 / "build_cache").glob("*.sig"))) == 3
    assert len(list((v2 / "build_cache").rglob("*.spack"))) == 3


def test_output_is_deterministic(tmp_path: Path) -> None:
    releases = {"develop": {"root": synthetic_specs(20), "e4s": synthetic_specs(5)}}
    build_catalog_from_specs(tmp_path / "a", releases)
    build_catalog_from_specs(tmp_path / "b", releases)
    build_catalog_from_specs(tmp_path / "c", releases, layout="v2")
    build_catalog_from_specs(tmp_path / "d", releases, layout="v2")
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert tree(tmp_path / "c") == tree(tmp_path / "d")


def test_clearsign_dash_escapes_and_round_trips() -> None:
    text = '{\n-----BEGIN PGP SIGNATURE-----\n- item\n--x\n"-"\n}'
    signed = clearsign(text)
    assert "\n- -----BEGIN PGP SIGNATURE-----\n- - item\n- --x\n" in signed
    assert unclearsign(signed) == text
    assert clearsign(text) == signed


# -- catalogue -----------------------------------------------------------------


def resolve(docroot: Path, url: str) -> Path:
    assert url.startswith("s3://spack-binaries/")
    return docroot / url.removeprefix("s3://spack-binaries/")


@pytest.mark.parametrize("layout", ["v3", "v2"])
def test_catalog_points_at_each_index(tmp_path: Path, layout: str) -> None:
    releases = {
        "develop": {"root": synthetic_specs(6), "e4s": synthetic_specs(3)},
        "v0.23.1": {"root": synthetic_specs(2, seed=1)},
    }
    infos = build_catalog_from_specs(tmp_path, releases, layout=layout, manifests=False)
    catalog = read_json(tmp_path / CATALOG_NAME)
    assert {r: [e["label"] for e in entries] for r, entries in catalog.items()} == {
        "develop": ["root", "e4s"],
        "v0.23.1": ["root"],
    }
    for release, entries in catalog.items():
        for entry in entries:
            info = infos[release][entry["label"]]
            path = resolve(tmp_path, entry["url"])
            assert path == tmp_path / info.index_blob_relpath and path == info.index_path
            prefix = release if entry["label"] == "root" else f"{release}/{entry['label']}"
            if layout == "v3":
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                assert (
                    entry["url"]
                    == f"s3://spack-binaries/{prefix}/blobs/sha256/{digest[:2]}/{digest}"
                )
            else:
                assert entry["url"] == f"s3://spack-binaries/{prefix}/build_cache/index.json"
            count = len(releases[release][entry["label"]])
            assert len(cached_hashes(path.read_bytes())) == count


def test_write_catalog_mixes_layouts_and_buckets(tmp_path: Path) -> None:
    write_v3_mirror(tmp_path / "develop", synthetic_specs(2), manifests=False)
    write_v2_mirror(tmp_path / "old" / "e4s", synthetic_specs(2), manifests=False)
    path = write_catalog(
        tmp_path, {"develop": {"root": "develop"}, "v0.21.0": {"e4s": "old/e4s"}}, bucket="b"
    )
    catalog = read_json(path)
    assert catalog["develop"][0]["url"].startswith("s3://b/develop/blobs/sha256/")
    assert catalog["v0.21.0"] == [{"label": "e4s", "url": "s3://b/old/e4s/build_cache/index.json"}]
    with pytest.raises(FileNotFoundError):
        write_catalog(tmp_path, {"x": {"root": "missing"}})


# -- seeds ---------------------------------------------------------------------


def stack_hashes(docroot: Path) -> dict[str, set[str]]:
    (entries,) = read_json(docroot / CATALOG_NAME).values()
    return {e["label"]: cached_hashes(resolve(docroot, e["url"]).read_bytes()) for e in entries}


@pytest.mark.parametrize("layout", ["v3", "v2"])
def test_seed_000_to_001_changes_indexes_exactly_as_the_pages_differ(
    tmp_path: Path, layout: str
) -> None:
    build_from_seed(tmp_path, "000", layout=layout, manifests=False)
    before = stack_hashes(tmp_path)
    assert {k: len(v) for k, v in before.items()} == load_seed("000").meta.num_specs_by_stack
    build_from_seed(tmp_path, "001", layout=layout, manifests=False)
    after = stack_hashes(tmp_path)
    assert {k: len(v) for k, v in after.items()} == load_seed("001").meta.num_specs_by_stack
    added = {k: len(after[k] - before.get(k, set())) for k in after}
    removed = {k: len(before[k] - after.get(k, set())) for k in before}
    net = {k: added.get(k, 0) - removed.get(k, 0) for k in after.keys() | before.keys()}
    assert net == SEED_NET_CHANGE
    # Each change is one-directional: e4s only gains, every other stack only loses.
    assert added == {k: 20 if k == "e4s" else 0 for k in after}
    assert removed["root"] == 35 and after["root"] <= before["root"]


def test_seed_build_serves_per_spec_files(tmp_path: Path) -> None:
    infos = build_from_seed(tmp_path, "001")
    e4s = infos["develop"]["e4s"]
    assert len(e4s.spec_files) == 20
    assert all((tmp_path / p).is_file() for p in e4s.spec_files.values())
    assert all(
        p.startswith("develop/e4s/v3/manifests/spec/py-pyproject-hooks/")
        for p in e4s.spec_files.values()
    )
